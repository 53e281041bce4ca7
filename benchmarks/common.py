"""Shared pieces of the benchmark scripts: a prepared RecBole run on a real dataset.

Benchmarks print ratios measured side by side in one process (alternating
epochs, medians), never absolute targets in tests.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = str(REPO.parent / "shared" / "datasets")


def arg_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--data_path", default=DEFAULT_DATA)
    parser.add_argument("--models", default="BPR,LightGCN")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per variant")
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--gpu_id", default="0")
    parser.add_argument("--use_gpu", action="store_true", help="use CUDA when available")
    return parser


@dataclass
class Setup:
    """What a side-by-side benchmark timed: its first printed line."""

    dataset: str
    sparsity: float
    epochs: int
    torch: str
    threads: int

    @classmethod
    def of(cls, args) -> "Setup":
        return cls(args.dataset, args.sparsity, args.epochs, torch.__version__, torch.get_num_threads())

    def lines(self) -> list[str]:
        return [f"dataset {self.dataset}, sparsity {self.sparsity}, {self.epochs} timed epochs per variant "
                f"(+1 warm-up), torch {self.torch}, threads {self.threads}"]


def show(results) -> None:
    """Print each of a benchmark's results (anything with ``lines()``) as it is measured."""
    for result in results:
        for line in result.lines():
            print(line)


def prepare_run(model: str, args, method: str = "dense", **overrides):
    """A prepared ``recbole_lth`` Run (data loaded, model built) in a temp dir."""
    from recbole_lth import api

    settings = {
        **benchmark_split(args.data_path, args.dataset),
        "data_path": args.data_path, "state": "WARNING", "show_progress": False,
        "epochs": max(args.epochs, 1), "output_root": tempfile.mkdtemp(prefix="lth-bench-"),
        "use_gpu": bool(args.use_gpu), "gpu_id": args.gpu_id, **overrides,
    }
    return api.prepare(model=model, dataset=args.dataset, method=method, config_dict=settings)


def benchmark_split(data_path: str, dataset: str) -> dict:
    """RecBole's keys for a dataset stored as its fixed train/valid/test files
    (yelp2018, lastfm, citeulike: ``<name>.train.inter`` ...), else none."""
    folder = Path(data_path) / dataset
    if (folder / f"{dataset}.train.inter").is_file() and not (folder / f"{dataset}.inter").is_file():
        return {"benchmark_filename": ["train", "valid", "test"]}
    return {}


def keys_of(text: str) -> dict:
    """``--settings "key=value key=value"`` as RecBole/plugin values."""
    from recbole_lth.core.settings import parse_value

    return {key: parse_value(value) for key, _, value in (pair.partition("=") for pair in text.split())}


def study_config(args, **keys) -> dict:
    """A benchmark study's keys: its data, quiet logs, ``keys``, then ``--settings``."""
    return {"data_path": args.data_path, **benchmark_split(args.data_path, args.dataset), "state": "WARNING",
            "show_progress": False, **keys, **keys_of(args.settings)}


def recbole_trainer(run):
    """RecBole's own trainer for the run's model, untouched (the dense reference)."""
    from recbole.utils import get_trainer

    config = run.config
    model = copy.deepcopy(run.model)
    for accelerated in ("forward", "bipartite_graph"):  # fast_propagation's: RecBole's own forward instead
        vars(model).pop(accelerated, None)
    return get_trainer(config["MODEL_TYPE"], config["model"])(config, model)


def masked_trainer(run, sparsity: float, seed: int = 0):
    """Our trainer on a copy of the run's model with a random global mask
    (the same mask for the same sparsity and seed)."""
    from recbole_lth.core import pruning
    from recbole_lth.core.masking import ParameterMask, select_prunable
    from recbole_lth.engine.trainer import sparse_trainer

    model = copy.deepcopy(run.model)
    params = select_prunable(model, "embeddings")
    masks = pruning.random_mask(params, sparsity, "global", seed=seed)
    return sparse_trainer(run.config, model, ParameterMask(params, masks))


class FirstSteps:
    """A training loader cut to its first ``steps`` batches (``--max_steps``):
    per-step ratios of a backbone whose epochs are minutes long (LightGCN on
    ml-1m); everything else is the loader's."""

    def __init__(self, loader, steps: int):
        self.loader, self.steps = loader, steps

    def __iter__(self):
        for step, batch in enumerate(self.loader):
            if step == self.steps:
                return
            yield batch

    def __len__(self):
        return min(self.steps, len(self.loader))

    def __getattr__(self, name):
        return getattr(self.loader, name)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    start = perf_counter()
    fn()
    sync(device)
    return perf_counter() - start


def alternate(variants: dict, epochs: int, device) -> dict:
    """Time ``epochs`` rounds of each variant's ``fn(epoch_idx)``, alternating
    the order every round so drift and warm-up hit all variants alike."""
    times = {name: [] for name in variants}
    names = list(variants)
    for epoch in range(epochs):
        order = names if epoch % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(timed(lambda: variants[name](epoch), device))
    return {name: statistics.median(values) for name, values in times.items()}
