"""The one builder of RecBole's config, data and models.

Only ``recbole.config``, ``recbole.data`` and ``recbole.utils`` are used
(never ``recbole.quick_start``, which imports ray), so the plugin also runs
where RecBole is installed with ``--no-deps``.  Every model of a run (the
run's own, a baseline's smaller one, a frozen teacher, the report's model
for the MAC count) is built here, from the same config and seed.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager, nullcontext

import torch
import yaml

from recbole_lth import backbones
from recbole_lth.core import rebind, tasks
from recbole_lth.core.errors import ConfigError
from recbole_lth.core.optim import is_sparse_learner, read_rows_sparsely
from recbole_lth.engine import distributed


@contextmanager
def argv_isolated():
    """RecBole's Config also parses ``sys.argv``; we pass everything
    explicitly, so hide the caller's argv (pytest's, a notebook's, ...)."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


# ------------------------------------------------------------------ data
def bundled_data_path() -> str:
    import recbole

    return os.path.join(os.path.dirname(recbole.__file__), "dataset_example")


def _atomic_files_present(folder: str, dataset: str, benchmark) -> bool:
    if not os.path.isdir(folder):
        return False
    if benchmark:
        return all(os.path.isfile(os.path.join(folder, f"{dataset}.{part}.inter")) for part in benchmark)
    return os.path.isfile(os.path.join(folder, f"{dataset}.inter"))


def resolve_data_path(settings: dict) -> str:
    """Find the dataset's atomic files; never let RecBole download.

    Looks under ``data_path`` first, then in the datasets bundled with RecBole
    (ml-100k).  Returns the data_path to hand to RecBole.
    """
    dataset = settings["dataset"]
    benchmark = settings.get("benchmark_filename")
    data_path = settings.get("data_path") or "dataset/"
    for root in (data_path, bundled_data_path()):
        if _atomic_files_present(os.path.join(root, dataset), dataset, benchmark):
            return root
    wanted = ", ".join(f"{dataset}.{part}.inter" for part in benchmark) if benchmark else f"{dataset}.inter"
    available = sorted(
        d for d in (os.listdir(data_path) if os.path.isdir(data_path) else [])
        if os.path.isdir(os.path.join(data_path, d))
    )
    raise ConfigError(
        "dataset", dataset,
        f"a folder {os.path.join(data_path, dataset)}/ holding {wanted} (RecBole atomic files; "
        f"nothing is downloaded). Datasets under data_path={data_path!r}: {available or 'none'}; "
        f"bundled with RecBole: ml-100k. Set --data_path to the folder that holds {dataset}/",
    )


def inter_files(settings: dict, data_path: str) -> list[str]:
    """The paths of the ``.inter`` files RecBole reads for these settings."""
    dataset = settings["dataset"]
    benchmark = settings.get("benchmark_filename")
    names = [f"{dataset}.{part}.inter" for part in benchmark] if benchmark else [f"{dataset}.inter"]
    return [os.path.join(data_path, dataset, name) for name in names]


def check_atomic_files(settings: dict, data_path: str) -> None:
    """The ``.inter`` files RecBole will read: a header of ``name:type``
    fields holding the columns the model's task needs (user and item ids; a
    sequential model's timestamps; a CTR model's label: :func:`check_labels`),
    and at least one row.  RecBole itself fails on these with a traceback deep in pandas."""
    dataset = settings["dataset"]
    separator = settings.get("field_separator") or "\t"
    task = tasks.for_model(settings["model"]) or tasks.GENERAL
    wanted = [settings.get(key) or default for key, default in task.id_fields]
    for path in inter_files(settings, data_path):
        with open(path, errors="replace") as f:
            header = f.readline().rstrip("\r\n")
            first_row = f.readline().strip()
        fields = [field.strip() for field in header.split(separator) if field.strip()]
        untyped = [field for field in fields if ":" not in field]
        present = {field.split(":", 1)[0] for field in fields}
        missing = [w for w in wanted if w not in present]
        if not fields or untyped or missing or not first_row:
            problem = ("it is empty" if not fields else f"header fields without a type: {untyped}" if untyped
                       else f"no {' or '.join(missing)} column" if missing else "it has no interaction rows")
            raise ConfigError(
                "dataset", dataset,
                f"RecBole atomic files: a tab-separated header of field:type columns (e.g. user_id:token "
                f"item_id:token) and at least one row; {path}: {problem}",
            )


def check_task_columns(config, data_path: str) -> None:
    """What RecBole loads must hold what the task reads: a sequential
    model's ``TIME_FIELD`` (``load_col``), a context-aware model's label."""
    task = tasks.of_config(config)
    inter_cols = (config["load_col"] or {}).get("inter") if isinstance(config["load_col"], dict) else None
    if task is tasks.SEQUENTIAL and inter_cols is not None and config["TIME_FIELD"] not in inter_cols:
        raise ConfigError("load_col", config["load_col"],
                          f"null (every column), or an inter list holding {config['TIME_FIELD']}: a sequential "
                          f"model orders each history by time")
    if task.ranks_items:
        return
    check_labels(config, data_path)


def check_labels(config, data_path: str) -> None:
    """A context-aware model learns from a 0/1 label: the ``.inter`` files
    must hold ``LABEL_FIELD`` or the field a ``threshold`` reads."""
    wanted = tasks.label_columns(config)
    settings = {"dataset": config["dataset"], "benchmark_filename": config["benchmark_filename"]}
    separator = config["field_separator"] or "\t"
    for path in inter_files(settings, data_path):
        with open(path, errors="replace") as f:
            present = {field.split(":", 1)[0].strip() for field in f.readline().rstrip("\r\n").split(separator)}
        if not any(w in present for w in wanted):
            raise ConfigError(
                "LABEL_FIELD", config["LABEL_FIELD"],
                f"a 0/1 label column of {path} (it has {sorted(present)}), or a threshold on one of its fields "
                f"(e.g. --threshold=\"{{rating: 4}}\"): a context-aware model learns from labels")


def data_fingerprint(train, valid, test) -> dict:
    """Sizes and a hash of every split's rows: resuming a run on other data
    (another data_path, another split) is refused.  A task with user and
    item ids hashes them; a context-aware one without ids every column."""
    import hashlib

    import numpy as np

    dataset = train.dataset
    ids = [f for f in (dataset.uid_field, dataset.iid_field) if f is not None]
    out = {"users": int(dataset.user_num) if dataset.uid_field else 0,
           "items": int(dataset.item_num) if dataset.iid_field else 0}
    for name, loader in (("train", train), ("valid", valid), ("test", test)):
        split = loader.dataset
        fields = ids if len(ids) == 2 else sorted(split.inter_feat.columns)
        blob = b"".join(np.asarray(split.inter_feat[f].numpy(), dtype=np.int64 if f in ids else None).tobytes()
                        for f in fields)
        digest = hashlib.sha1(blob).hexdigest()[:16]
        out[name] = {"interactions": int(len(split.inter_feat)), "sha1": digest}
    return out


# ----------------------------------------------------------------- config
# Keys RecBole reads without declaring them in its properties files.
_UNDECLARED_RECBOLE_KEYS = {"nproc", "world_size", "ip", "port", "offset", "valid_neg_sample_args",
                            "test_neg_sample_args", "model", "dataset", "config_files"}


def recbole_values(model: str, dataset: str) -> dict:
    """RecBole's own property values for ``model`` and ``dataset`` (its
    files, read as its Config reads them; nothing is built)."""
    import recbole

    folder = os.path.join(os.path.dirname(recbole.__file__), "properties")
    values = {}
    for name in ("overall.yaml", f"model/{model}.yaml", "dataset/sample.yaml", f"dataset/{dataset}.yaml"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path) as f:
                values.update(yaml.safe_load(f) or {})
    return values


def recbole_keys(model: str, dataset: str) -> set[str]:
    """Every key RecBole's Config defines for ``model`` and ``dataset``."""
    return set(_UNDECLARED_RECBOLE_KEYS) | set(recbole_values(model, dataset))


# Plugin keys that RecBole's Config must not see as its own.
_NOT_FOR_RECBOLE = ("model", "dataset", "config_files")


def recbole_config(settings: dict, checkpoint_dir, **overrides):
    """RecBole's ``Config`` for the merged settings (every key passed
    explicitly; the caller's ``sys.argv`` is ignored)."""
    from recbole.config import Config

    values = {k: v for k, v in settings.items() if k not in _NOT_FOR_RECBOLE}
    values.setdefault("checkpoint_dir", str(checkpoint_dir))
    values.update(distributed.recbole_keys())  # this process's rank, in a launched run
    values.update(overrides)
    with argv_isolated():
        return Config(model=settings["model"], dataset=settings["dataset"], config_dict=values)


def plain_config(config) -> str:
    """RecBole's resolved config as yaml (values yaml cannot hold as strings)."""
    plain = {}
    for key, value in config.final_config_dict.items():
        try:
            yaml.safe_dump(value)
            plain[key] = value
        except yaml.representer.RepresenterError:
            plain[key] = str(value)
    return yaml.safe_dump(plain, sort_keys=True)


def seed(config) -> None:
    from recbole.utils import init_seed

    init_seed(config["seed"], config["reproducibility"])


def score_width(config) -> int:
    """Floats held per (user, item) score while full-sort evaluation scores
    a batch, as the backbone declares it: 1 for a dot-product scorer (BPR,
    LightGCN: one users x items block), a few for the autoencoders (input
    row, output row, activation), NeuMF's every pair's activations.  An
    undeclared model: 1, RecBole's own reading of ``eval_batch_size``."""
    declared = backbones.get(config["model"])
    return declared.score_width(config) if declared is not None else 1


def full_sort_batch_size(config, n_items: int, memory_mb: float) -> int:
    """An ``eval_batch_size`` whose score block fits ``memory_mb``.

    RecBole's full-sort loader scores ``eval_batch_size // n_items`` users at
    a time: at its default 4096 and more than 4096 items that is one user per
    batch, and validation then costs far more than the scoring itself."""
    floats = int(memory_mb * 2**20 / 4)
    users = max(1, floats // (n_items * score_width(config)))
    return users * n_items


def load_data(config, eval_memory_mb: float | None = None):
    """``(dataset, train, valid, test)``: RecBole's dataset and its data
    loaders, split with the run's seed.  ``eval_memory_mb``: size the
    full-sort batches from this budget (the caller passes None when the user
    set ``eval_batch_size``)."""
    from recbole.data import create_dataset, data_preparation

    seed(config)
    dataset = create_dataset(config)
    if eval_memory_mb:
        config["eval_batch_size"] = full_sort_batch_size(config, dataset.item_num, eval_memory_mb)
    return (dataset, *data_preparation(config, dataset))


def load_judgeable_data(settings: dict, config, data_path: str):
    """``load_data``, refusing (one line) data on which no ticket can be
    judged: RecBole's own data errors, an empty validation or test split,
    and, for a ranking task, a K of ``topk`` not below the number of items
    (every ranking would hold every item: Recall@K = 1)."""
    files = " ".join(inter_files(settings, data_path))
    check_task_columns(config, data_path)
    try:
        loaded = load_data(config, eval_memory(settings))
    except ValueError as err:
        raise ConfigError("dataset", files, f"data RecBole can load and split (it failed: "
                                            f"{' '.join(str(err).split())[:300]})") from None
    dataset, train, valid, test = loaded
    ranking = tasks.of_config(config).ranks_items
    for name, loader in (("validation", valid), ("test", test)):
        split = loader.dataset
        rows = len(split.inter_feat)
        if rows == 0 or (ranking and split.inter_feat[split.uid_field].unique().numel() == 0):
            raise ConfigError(
                "dataset", files,
                f"data whose {name} split has {'users' if ranking else 'rows'}: it has none (eval_args split "
                f"{config['eval_args']['split']}, {len(train.dataset.inter_feat)} training rows); each user needs "
                f"enough interactions for every split (e.g. 3 or more for 8:1:1)",
            )
    if not ranking:
        return loaded
    items = dataset.item_num - 1  # RecBole's id 0 is padding
    topk = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
    if max(topk) >= items:
        raise ConfigError("topk", config["topk"], f"every K below the number of items ({items}): at K >= items "
                                                  f"every ranking holds every item and Recall@K is 1")
    return loaded


def eval_memory(settings: dict) -> float | None:
    """The full-sort budget, unless the user chose ``eval_batch_size`` (which
    wins) or the task scores labeled rows (RecBole's batches of rows)."""
    task = tasks.for_model(settings.get("model")) or tasks.GENERAL
    if settings.get("eval_batch_size") or not task.ranks_items:
        return None
    return settings.get("eval_memory_mb")


# ------------------------------------------------------------------ models
@contextmanager
def config_values(config, values: dict):
    """Temporarily set ``values`` in a RecBole config."""
    saved = {key: config[key] for key in values}
    for key, value in values.items():
        config[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            config[key] = value


def new_model(config, dataset, sizes: dict | None = None, fork_rng: bool = False):
    """A new model of the config's class on the config's device.

    ``sizes``: config values for this model only (a baseline's smaller
    widths); ``fork_rng``: build without drawing from the run's random stream
    (a frozen teacher must not shift the student's dropout or sampling);
    otherwise the model is seeded as the run's own model is.
    """
    from recbole.utils import get_model

    device = torch.device(config["device"])
    with config_values(config, sizes or {}):
        if fork_rng:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                model = get_model(config["model"])(config, dataset)
        else:
            seed(config)
            model = get_model(config["model"])(config, dataset)
    return accelerated(config, model.to(device))


def accelerated(config, model):
    """The model with its backbone's faster forward, unless ``fast_propagation`` is False;
    with a row-sparse learner (``sparse_adam``, ``rowwise_adagrad``), its tables looked up with sparse gradients."""
    declared = backbones.of(model)
    if declared is not None and declared.accelerate is not None and config["fast_propagation"] is not False:
        declared.accelerate(model)
    if is_sparse_learner(config["learner"]):
        read_rows_sparsely(model)
    return model


def rebuild(settings: dict, checkpoint_dir):
    """``(train_dataset, model)`` rebuilt from a run's stored settings (same
    seed, same split), for a report that needs what the run did not store.
    Never downloads: the dataset must be found as in a run."""
    settings = dict(settings, data_path=resolve_data_path(settings))
    config = recbole_config(settings, checkpoint_dir, state="WARNING", show_progress=False)
    _, train, _, _ = load_data(config, eval_memory(settings))
    return train.dataset, new_model(config, train.dataset)


def skeleton_model(config, dataset):
    """The config's RecBole model with every parameter on the meta device (no
    storage, nothing initialised), for a loader that fills in its own
    tensors: a compact ticket never allocates its dense tables.  Tensors a
    model derives from the data in ``__init__`` are real: LightGCN's graph
    (built from numpy), the autoencoders' history matrix (computed here,
    outside the meta context, and handed to the model's builder)."""
    from recbole.model.abstract_recommender import AutoEncoderMixin
    from recbole.utils import get_model

    cls = get_model(config["model"])
    history = dataset.history_item_matrix() if issubclass(cls, AutoEncoderMixin) else None
    handed = nullcontext() if history is None else rebind.swapped(
        dataset, "history_item_matrix", lambda *args, **kwargs: history)
    with handed, torch.device("meta"):
        return cls(config, dataset)
