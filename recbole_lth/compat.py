"""RecBole 1.2.1 on today's stack: every patch the plugin needs, in one place.

RecBole 1.2.1 was released against numpy 1.x, scipy < 1.13, torch < 2.6 and
pandas 2.x.  On newer releases five things break; each patch below names the
break, is idempotent, and does nothing where the installed version is fine.

1. numpy 2 removed ``np.float_``, ``np.complex_``, ``np.unicode_`` and
   ``np.bool8``.  ``recbole.config.Config.compatibility_settings`` assigns from
   the first three and so raises ``AttributeError`` on every ``Config(...)``;
   ``ray.tune`` 2.6.3 (RecBole's pinned dependency, imported by
   ``recbole.quick_start``) reads ``np.bool8`` at import.  We restore the four
   aliases (to the same types numpy 1.x had), so RecBole's own settings, its
   ``np.float`` uses in metrics and datasets, and its quick_start work
   unchanged.  (ray 2.6.3 also imports ``pkg_resources``, which setuptools 81
   removed: the package requires ``setuptools<81``, see pyproject.toml.)
2. scipy >= 1.13 dropped ``dok_matrix._update``, which LightGCN (and NGCF,
   GCMC, SpectralCF, NCL, KGIN, MCCLK) use to fill their adjacency matrix.  We
   add it back as a bulk ``dict.update`` of the matrix's storage (C speed).
3. torch >= 2.6 defaults ``torch.load(weights_only=True)``; RecBole pickles its
   ``Config`` inside every checkpoint, so ``Trainer.resume_checkpoint``,
   ``Trainer.evaluate(load_best_model=True)`` and NeuMF's pretrain loading
   fail.  Those files are the user's own RecBole checkpoints, so inside those
   RecBole modules ``torch.load`` defaults to ``weights_only=False`` again.
   Our own checkpoints hold tensors and plain data only and are always loaded
   with ``weights_only=True`` (see ``recbole_lth.core.checkpoint``).
4. pandas 3 (copy-on-write) makes RecBole's chained
   ``df[field].fillna(value, inplace=True)`` a silent no-op, leaving NaN in
   token/float fields (``Dataset._fill_nan``) and in sequence fields right
   after reading (``Dataset._load_feat``).  We replace ``_fill_nan`` with the
   same logic written as assignments, and fill missing sequence cells with ""
   as the file is read, which is what RecBole's no-op line meant to do.
   pandas 3 also makes ``Series.agg(len)`` return the Series' length instead
   of each cell's, which breaks remapping/normalising sequence fields
   (``token_seq``/``float_seq``); while RecBole processes a dataset
   (``Dataset._data_processing``), ``Series.agg(len)`` is elementwise again.

5. Also from torch 2.6 on, ``recbole.quick_start.load_data_and_model`` (how
   RecBole users open a saved model) calls ``torch.load(file)`` with its
   ``import torch`` inside the function, so no module attribute can reach it,
   and the weights-only loader refuses RecBole's pickled ``Config``.  We add
   the types a RecBole checkpoint of a general recommender holds (``Config``,
   yaml's ``FullLoader`` class it keeps, RecBole's enums, the general model
   classes it stores as ``model_class``) to torch's allowlist
   (``torch.serialization.add_safe_globals``): such checkpoints then load with
   ``weights_only=True``, and nothing else is trusted.  (This reads files
   saved with torch.save's default pickle protocol, as the plugin's
   ``export --format recbole`` writes them; RecBole's own trainer writes
   protocol 4, which the weights-only loader cannot read at all, so its files
   still need ``weights_only=False``, as patch 3 gives RecBole's trainer.)

6. RecBole's known warnings on today's stack, which say nothing a user of
   the plugin can act on, are silenced (and only they, by message and
   module): numpy's non-writable array ``UserWarning`` (RecBole's dataset),
   ``torch.cuda.amp.GradScaler``'s ``FutureWarning`` (RecBole's trainer),
   torch's ``SparseTensor`` constructor deprecation (LightGCN), ray's
   ``pkg_resources`` deprecation (``recbole.quick_start``), pandas 3's
   ``inplace=`` deprecation and its chained-assignment warning on the
   sequence fields' fillna (RecBole's dataset; patch 4 does what that line
   meant) and numpy 2's
   ``__array_wrap__`` deprecation (RecBole's sparse matrices).

7. RecBole 1.2.1's distributed path (a ``Config`` with ``local_rank``)
   hard-codes the NCCL backend and a CUDA device in ``Config._init_device``,
   and calls ``init_process_group`` on every ``Config`` it builds; its
   trainer passes ``device_ids=[local_rank]`` to ``DistributedDataParallel``,
   which torch refuses for a CPU module.  So that path cannot run, or be
   tested, without GPUs.  We let ``_init_device`` pick gloo and the CPU when
   no CUDA device is used (NCCL and ``cuda:local_rank`` otherwise, as RecBole
   does), create the process group only once per process, and build the
   trainer's DDP wrapper without ``device_ids`` for a CPU model.  A
   ``Config`` without ``local_rank`` takes RecBole's own path unchanged.

9. RecBole 1.2.1 declares ``use_gpu`` but never reads it: ``_init_device``
   picks CUDA whenever ``gpu_id`` (default "0") is set and a GPU exists, so
   ``--use_gpu=False`` trained on the GPU anyway (found by the GPU check's
   CPU cases on the H200).  ``use_gpu: False`` now gives the CPU.

8. RecBole's ``sine.py`` switches torch's anomaly detection on for the whole
   process when it is imported, which ``get_model`` does for every sequential
   model name: every later training ran under torch's debugger.  It is
   imported once here and the detection switched back off.

``apply()`` is called on ``import recbole_lth``; it never imports
``recbole.quick_start`` (which drags in ray).
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import types
import warnings

import numpy as np

_APPLIED: dict[str, bool] = {}

# RecBole modules that call torch.load on RecBole's own pickled checkpoints.
_TORCH_LOAD_MODULES = (
    "recbole.trainer.trainer",
    "recbole.model.general_recommender.neumf",
    "recbole.model.general_recommender.convncf",
    "recbole.model.general_recommender.nais",
    "recbole.model.general_recommender.ract",
)


def patch_numpy_aliases() -> bool:
    """(1) Give numpy 2 the aliases RecBole's Config assigns from, and the
    ones it assigns (its ``compatibility_settings``, which only runs when a
    Config is *built*: a Config unpickled by ``load_data_and_model`` never sets
    ``np.float``, which RecBole's metrics read)."""
    patched = False
    removed = (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_), ("bool8", np.bool_))
    recbole_sets = (("bool", np.bool_), ("int", np.int_), ("float", np.float64), ("complex", np.complex128),
                    ("object", np.object_), ("str", np.str_), ("long", np.int_), ("unicode", np.str_))
    for alias, target in removed + recbole_sets:
        with warnings.catch_warnings():  # numpy warns on a lookup of a removed alias
            warnings.simplefilter("ignore")
            present = hasattr(np, alias)
        if not present:
            setattr(np, alias, target)
            patched = True
    return patched


def patch_scipy_dok_update() -> bool:
    """(2) Restore ``dok_matrix._update`` (bulk insert) on scipy >= 1.13."""
    import scipy.sparse as sp

    if hasattr(sp.dok_matrix, "_update"):
        return False

    def _update(self, data):
        # Same contract as scipy < 1.13: keys are (row, col), no bounds check.
        self._dict.update(data)

    sp.dok_matrix._update = _update
    return True


class _TrustedTorch(types.ModuleType):
    """``torch`` as seen from RecBole's checkpoint-loading modules.

    Everything is forwarded to torch, except that ``load`` keeps the pre-2.6
    default ``weights_only=False`` for RecBole's own (pickled) checkpoints.
    """

    def __init__(self, torch_module):
        super().__init__("torch")
        self.__dict__["_torch"] = torch_module

    def __getattr__(self, name):
        return getattr(self.__dict__["_torch"], name)

    def load(self, *args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return self.__dict__["_torch"].load(*args, **kwargs)


def patch_torch_load() -> bool:
    """(3) Let RecBole load its own pickled checkpoints on torch >= 2.6."""
    import torch

    patched = False
    for name in _TORCH_LOAD_MODULES:
        module = importlib.import_module(name)
        current = getattr(module, "torch", None)
        if current is torch:
            module.torch = _TrustedTorch(torch)
            patched = True
    return patched


def _fill_nan(self):
    """RecBole's ``Dataset._fill_nan`` with assignments instead of chained inplace."""
    from recbole.utils import FeatureType

    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(value=0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                feat[field] = feat[field].apply(
                    lambda x: np.array([], dtype=dtype) if isinstance(x, float) else x
                )


class _SeqFillingPandas(types.ModuleType):
    """``pandas`` as seen from RecBole's dataset module: ``read_csv`` fills
    missing cells of ``*_seq`` columns with "" (the intent of RecBole's chained
    ``fillna(value="", inplace=True)`` that is a no-op under copy-on-write)."""

    def __init__(self, pandas_module):
        super().__init__("pandas")
        self.__dict__["_pd"] = pandas_module

    def __getattr__(self, name):
        return getattr(self.__dict__["_pd"], name)

    def read_csv(self, *args, **kwargs):
        df = self.__dict__["_pd"].read_csv(*args, **kwargs)
        for column in df.columns:
            if str(column).endswith("_seq") and df[column].isna().any():
                df[column] = df[column].fillna("")
        return df


def _agg_len_is_elementwise() -> bool:
    import warnings

    import pandas as pd

    with warnings.catch_warnings():  # pandas 2.x warns that this behaviour is going away
        warnings.simplefilter("ignore", FutureWarning)
        return isinstance(pd.Series([[1, 2]]).agg(len), pd.Series)


@contextlib.contextmanager
def _elementwise_agg_len():
    """``Series.agg(len)`` per cell, as RecBole (written for pandas < 3) expects."""
    import pandas as pd

    original = pd.Series.agg

    def agg(self, func=None, *args, **kwargs):
        if func is len:
            return self.map(len)
        return original(self, func, *args, **kwargs)

    pd.Series.agg = agg
    try:
        yield
    finally:
        pd.Series.agg = original


def _with_elementwise_agg_len(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _elementwise_agg_len():
            return method(*args, **kwargs)

    wrapper._recbole_lth_patched = True
    return wrapper


def patch_pandas_fillna() -> bool:
    """(4) Make RecBole's NaN filling and sequence fields work under pandas 3."""
    import pandas as pd
    from recbole.data.dataset import dataset as dataset_module

    patched = False
    processing = dataset_module.Dataset._data_processing
    if not _agg_len_is_elementwise() and not getattr(processing, "_recbole_lth_patched", False):
        dataset_module.Dataset._data_processing = _with_elementwise_agg_len(processing)
        patched = True
    if getattr(dataset_module.Dataset._fill_nan, "__module__", "") != __name__:
        dataset_module.Dataset._fill_nan = _fill_nan
        patched = True
    if dataset_module.pd is pd:
        dataset_module.pd = _SeqFillingPandas(pd)
        patched = True
    return patched


def recbole_checkpoint_types() -> list:
    """The types a RecBole checkpoint of a general recommender pickles."""
    import enum

    import yaml
    from recbole.config import Config
    from recbole.model import general_recommender
    from recbole.model.abstract_recommender import AbstractRecommender
    from recbole.utils import enum_type

    enums = [v for v in vars(enum_type).values() if isinstance(v, type) and issubclass(v, enum.Enum)
             and v is not enum.Enum]
    models = [v for v in vars(general_recommender).values()
              if isinstance(v, type) and issubclass(v, AbstractRecommender)]
    return [Config, yaml.FullLoader, *enums, *models]


def allow_recbole_checkpoints() -> bool:
    """(5) Let torch's weights-only loader open RecBole's checkpoints."""
    import torch

    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is None:  # torch < 2.4: torch.load is not weights-only by default
        return False
    wanted = recbole_checkpoint_types()
    allowed = set(torch.serialization.get_safe_globals())
    missing = [t for t in wanted if t not in allowed]
    if missing:
        add(missing)
    return bool(missing)


KNOWN_WARNINGS = (
    (UserWarning, r"The given NumPy array is not writable", r"recbole\."),
    (FutureWarning, r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated", r"recbole\."),
    (UserWarning, r"torch\.sparse\.SparseTensor\(indices, values, shape", r"recbole\."),
    (UserWarning, r"pkg_resources is deprecated as an API", r"ray\."),
    (Warning, r"The inplace keyword in DataFrame\.\w+ is deprecated", r"recbole\."),  # pandas 3
    # the sequence-field fillna that patch 4 does in its stead: pandas 3 says "is being set"
    # (ChainedAssignmentError), pandas 2.2+ "is trying to be set" (FutureWarning)
    (Warning, r"A value is (being|trying to be) set on a copy of a DataFrame or Series through chained assignment",
     r"recbole\."),
    (DeprecationWarning, r"__array_wrap__ must accept context and return_scalar", r"numpy\."),  # numpy 2 + scipy
)


def silence_known_warnings() -> bool:
    """(6) Hide RecBole's warnings that the user cannot act on."""
    for category, message, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    return True


def _distributed_init_device(original):
    @functools.wraps(original)
    def _init_device(self):
        values = self.final_config_dict
        if "local_rank" not in values:
            original(self)
            if values.get("use_gpu") is False:  # (9) RecBole reads only gpu_id (default "0")
                import torch

                values["device"] = torch.device("cpu")
            return None
        import os

        import torch
        import torch.distributed as dist

        gpu_id = values["gpu_id"]
        gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, tuple) else str(gpu_id)
        values["gpu_id"] = gpu_id
        use_cuda = bool(gpu_id) and values.get("use_gpu", True) is not False and torch.cuda.is_available()
        if use_cuda:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
        if not dist.is_initialized():
            dist.init_process_group(
                backend="nccl" if use_cuda else "gloo", rank=values["local_rank"] + values["offset"],
                world_size=values["world_size"], init_method=f"tcp://{values['ip']}:{values['port']}",
            )
        if use_cuda:
            values["device"] = torch.device("cuda", values["local_rank"])
            torch.cuda.set_device(values["device"])
        else:
            values["device"] = torch.device("cpu")
        values["single_spec"] = False
        if values["local_rank"] != 0:
            values["state"] = "error"
            values["show_progress"] = False
            values["verbose"] = False

    _init_device.recbole_lth_patched = True
    return _init_device


def _ddp_for_the_device(module, device_ids=None, **kwargs):
    from torch.nn.parallel import DistributedDataParallel

    parameter = next(module.parameters(), None)
    if parameter is not None and parameter.device.type != "cuda":
        device_ids = None  # a CPU module: torch refuses device ids
    return DistributedDataParallel(module, device_ids=device_ids, **kwargs)


def patch_distributed_device() -> bool:
    """(7) RecBole's distributed path on the CPU (gloo) as well as on GPUs (NCCL)."""
    from recbole.config import configurator
    import recbole.trainer.trainer as recbole_trainer

    config_class = configurator.Config
    if getattr(config_class._init_device, "recbole_lth_patched", False):
        return False
    config_class._init_device = _distributed_init_device(config_class._init_device)
    recbole_trainer.DistributedDataParallel = _ddp_for_the_device
    return True


def patch_anomaly_detection() -> bool:
    """(8) RecBole's SINE module calls ``torch.autograd.set_detect_anomaly(True)``
    at import, and ``recbole.utils.get_model`` imports every sequential model:
    from the first lookup of any model on, the whole process trains under
    torch's debugger (a stack trace kept per op, a device sync per backward;
    a DeepFM epoch on ml-100k took 31 s instead of ~1 s).  The module is
    imported here once and the detection set back to what it was."""
    import torch

    before = torch.is_anomaly_enabled()
    import recbole.model.sequential_recommender.sine  # noqa: F401  (its import switches the detection on)

    if torch.is_anomaly_enabled() and not before:
        torch.autograd.set_detect_anomaly(False)
        return True
    return False


def apply() -> dict[str, bool]:
    """Apply every patch once; returns which ones changed something now."""
    if _APPLIED:
        return dict(_APPLIED)
    _APPLIED["numpy_aliases"] = patch_numpy_aliases()
    _APPLIED["scipy_dok_update"] = patch_scipy_dok_update()
    _APPLIED["torch_load"] = patch_torch_load()
    _APPLIED["pandas_fillna"] = patch_pandas_fillna()
    _APPLIED["recbole_checkpoints"] = allow_recbole_checkpoints()
    _APPLIED["known_warnings"] = silence_known_warnings()
    _APPLIED["distributed_device"] = patch_distributed_device()
    _APPLIED["anomaly_detection"] = patch_anomaly_detection()
    return dict(_APPLIED)
