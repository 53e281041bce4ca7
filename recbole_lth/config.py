"""Settings: RecBole-style layering of yaml properties, and input checks.

Priority, lowest first (as in RecBole): RecBole's own model/dataset defaults
< ``properties/overall.yaml`` < ``properties/<method>.yaml`` < the user's
``config_files`` < ``--key=value`` / ``config_dict``.  Everything the user
can get wrong is checked here, before a dataset is loaded or a step is taken.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import yaml

from recbole_lth.errors import ConfigError
from recbole_lth.masking import PRUNE_SCOPES, PRUNE_TARGETS

PROPERTIES_DIR = Path(__file__).resolve().parent.parent / "properties"

SUPPORTED_MODELS = ("BPR", "LightGCN", "NeuMF", "MultiVAE", "CDAE")

# Keys that change how a run is shown or where it runs, not what it computes:
# they are left out of the run's identity, so changing them resumes a run.
VOLATILE_KEYS = {
    "state", "show_progress", "gpu_id", "use_gpu", "worker", "run_dir",
    "output_root", "checkpoint_dir", "log_wandb", "wandb_project", "config_files",
    "data_path",
}


def methods() -> tuple[str, ...]:
    from recbole_lth.methods import METHODS

    return tuple(METHODS)


def _read_yaml(path: Path | str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config_files", str(path), "paths of existing yaml files")
    with open(path) as f:
        loaded = yaml.safe_load(f) or {}
    if not isinstance(loaded, dict):
        raise ConfigError("config_files", str(path), "yaml files holding a mapping of key: value")
    return loaded


def parse_value(text: str):
    """``--key=value`` values, parsed like yaml (numbers, lists, null, bools)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def merge_settings(model=None, dataset=None, method=None, config_files=None, config_dict=None) -> dict:
    """Merge the layers into one plain dict (no RecBole objects)."""
    overrides = dict(config_dict or {})
    for key, value in (("model", model), ("dataset", dataset), ("method", method)):
        if value is not None:
            overrides[key] = value
    files = config_files if config_files is not None else overrides.pop("config_files", None)
    overrides.pop("config_files", None)
    if isinstance(files, str):
        files = files.split()
    files = list(files or [])

    settings = _read_yaml(PROPERTIES_DIR / "overall.yaml")
    user_layers = [_read_yaml(f) for f in files] + [overrides]
    chosen_method = settings.get("method")
    for layer in user_layers:
        chosen_method = layer.get("method", chosen_method)
    allowed = methods()
    if chosen_method not in allowed:
        raise ConfigError("method", chosen_method, ", ".join(allowed))
    method_file = PROPERTIES_DIR / f"{chosen_method}.yaml"
    if method_file.is_file():
        settings.update(_read_yaml(method_file))
    for layer in user_layers:
        settings.update(layer)
    settings["config_files"] = [str(f) for f in files]
    return settings


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_sparsity(key: str, value, allow_none=False) -> None:
    if value is None and allow_none:
        return
    if not _is_number(value) or not 0.0 <= value < 1.0:
        raise ConfigError(key, value, "a number in [0, 1)" + (" or null" if allow_none else ""))


def check_target_sparsities(settings: dict) -> None:
    """Methods that train one ticket per entry of ``target_sparsities``."""
    targets = settings.get("target_sparsities")
    if not isinstance(targets, list) or not targets:
        raise ConfigError("target_sparsities", targets, "a non-empty list of numbers in [0, 1)")
    for value in targets:
        check_sparsity("target_sparsities", value)


def check_settings(settings: dict) -> None:
    """Every check that needs no dataset and no model."""
    model = settings.get("model")
    if model not in SUPPORTED_MODELS:
        raise ConfigError("model", model, ", ".join(SUPPORTED_MODELS))
    if not settings.get("dataset"):
        raise ConfigError("dataset", settings.get("dataset"), "a dataset name under data_path (e.g. ml-100k)")

    prune_params = settings.get("prune_params")
    if not (
        prune_params in PRUNE_TARGETS
        or (isinstance(prune_params, list) and prune_params and all(isinstance(x, str) for x in prune_params))
    ):
        raise ConfigError("prune_params", prune_params, f"{', '.join(PRUNE_TARGETS)} or a list of parameter-name patterns")
    if settings.get("prune_scope") not in PRUNE_SCOPES:
        raise ConfigError("prune_scope", settings.get("prune_scope"), ", ".join(PRUNE_SCOPES))

    prune_rate = settings.get("prune_rate")
    if not _is_number(prune_rate) or not 0.0 < prune_rate < 1.0:
        raise ConfigError("prune_rate", prune_rate, "a number in (0, 1)")

    check_sparsity("target_sparsity", settings.get("target_sparsity"), allow_none=True)
    rounds = settings.get("rounds")
    if rounds is not None and (not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 0):
        raise ConfigError("rounds", rounds, "a whole number >= 0 or null")
    if settings["method"] in ("imp", "wr") and rounds is None and settings.get("target_sparsity") is None:
        raise ConfigError("rounds", rounds, "a whole number >= 0 when target_sparsity is null")

    if settings["method"] in ("omp", "rp"):
        check_target_sparsities(settings)

    epochs = settings.get("epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError("epochs", epochs, "a whole number >= 1")
    rewind_epoch = settings.get("rewind_epoch")
    if not isinstance(rewind_epoch, int) or isinstance(rewind_epoch, bool) or not 0 <= rewind_epoch < epochs:
        raise ConfigError("rewind_epoch", rewind_epoch, f"a whole number in [0, epochs) = [0, {epochs})")

    from recbole_lth.methods import CHECKS

    if settings["method"] in CHECKS:
        CHECKS[settings["method"]](settings)

    from recbole_lth.distill import check_distillation

    check_distillation(settings)  # kd_* keys apply to every method


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
    candidates = [data_path, bundled_data_path()]
    for root in candidates:
        if _atomic_files_present(os.path.join(root, dataset), dataset, benchmark):
            return root
    wanted = (
        ", ".join(f"{dataset}.{part}.inter" for part in benchmark) if benchmark else f"{dataset}.inter"
    )
    available = sorted(
        d for d in (os.listdir(data_path) if os.path.isdir(data_path) else [])
        if os.path.isdir(os.path.join(data_path, d))
    )
    raise ConfigError(
        "dataset",
        dataset,
        f"a folder {os.path.join(data_path, dataset)}/ holding {wanted} (RecBole atomic files; "
        f"nothing is downloaded). Datasets under data_path={data_path!r}: {available or 'none'}; "
        f"bundled with RecBole: ml-100k. Set --data_path to the folder that holds {dataset}/",
    )


def run_identity(settings: dict) -> str:
    """Short hash of everything that changes what a run computes."""
    relevant = {k: v for k, v in settings.items() if k not in VOLATILE_KEYS}
    blob = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def default_run_dir(settings: dict) -> str:
    root = settings.get("output_root") or "lth_runs"
    name = f"{settings['model']}-{settings['dataset']}-{settings['method']}-{run_identity(settings)}"
    return os.path.join(root, name)
