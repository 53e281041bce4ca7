"""Compact tickets vs the dense model at inference: resident bytes, peak memory and time of full-sort evaluation.

Trains BPR densely for ``--epochs`` through the plugin (``method=dense``),
builds tickets at ``--sparsities`` by one-shot global magnitude pruning of the
trained tables (not retrained: this measures memory and time, and what the
value format does to the metrics), exports each with ``recbole_lth.deploy.export``
(fp32 and int8 values) and loads it compact (``export.compact_model``).
Then RecBole's full-sort test evaluation runs for every variant side by side
in one process, in alternating order, median of ``--repeats`` after a
warm-up pass:

* ``dense``: the trained dense model;
* ``masked s``: the ticket in the dense layout (zeros stored), as the plugin
  evaluates tickets while training;
* ``compact s``/``int8 s``: the compact ticket.

Memory: the prunable tables' resident bytes (tensor storage, exact), and the
evaluation's peak above what was resident before it: on CPU the process's
peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` and freed heap
returned with ``malloc_trim`` before each pass), on CUDA
``torch.cuda.max_memory_allocated``.

    OMP_NUM_THREADS=1 python benchmarks/bench_compact.py                 # BPR on ml-1m
    OMP_NUM_THREADS=1 python benchmarks/bench_compact.py --eval_memory_mb 8   # smaller score blocks
    OMP_NUM_THREADS=1 python benchmarks/bench_compact.py --eval_memory_mb 8   # smaller score blocks
    python benchmarks/bench_compact.py --use_gpu
"""
from __future__ import annotations

import ctypes
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from common import arg_parser, prepare_run, show, timed  # noqa: E402

from recbole_lth.core import compact, pruning
from recbole_lth.core.masking import full_masks  # noqa: E402
from recbole_lth.deploy import export
from recbole_lth.engine import builder  # noqa: E402
from recbole_lth.engine.trainer import evaluation_trainer, invalidate_caches  # noqa: E402


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _release_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def peak_above_resident(fn, device) -> tuple[float, int]:
    """``(seconds, peak bytes above what was resident before fn)``."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        seconds = timed(fn, device)
        return seconds, torch.cuda.max_memory_allocated() - before
    _release_heap()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current RSS
    before = _status_kb("VmRSS")
    seconds = timed(fn, device)
    return seconds, (_status_kb("VmHWM") - before) * 1024


@dataclass
class Threads:
    torch: str
    threads: int

    def lines(self) -> list[str]:
        return [f"torch {self.torch}, threads {self.threads}"]


@dataclass
class Trained:
    """The dense model the tickets are cut from."""

    dataset: str
    embedding_size: int
    epochs: int
    tables: list  # the prunable tables' names
    table_bytes: int  # theirs, fp32
    eval_batch_size: int
    device: str

    def lines(self) -> list[str]:
        return [f"BPR on {self.dataset}, embedding_size {self.embedding_size}, dense trained {self.epochs} epoch(s); "
                f"prunable tables {self.tables} = {self.table_bytes} bytes fp32; eval_batch_size "
                f"{self.eval_batch_size}; device {self.device}"]


@dataclass
class Variant:
    """One variant's evaluation (medians of the timed passes), relative to the dense model's."""

    name: str  # dense, masked s, compact s, int8 s
    table_bytes: int
    tables_dense: float
    target: float | None  # the bound tables/dense should stay under (compact and int8)
    peak_bytes: float
    peak_dense: float  # nan when the dense evaluation's peak is 0
    tables_peak_dense: float
    seconds: float
    eval_dense: float
    recall: float  # test recall@20
    ndcg: float  # test ndcg@20
    recall_change: float | None  # relative to the masked ticket of its sparsity (compact and int8)

    def line(self) -> str:
        target = "" if self.target is None else f"{self.target:.3f}"
        change = "" if self.recall_change is None else \
            "exact" if self.recall_change == 0 else f"{self.recall_change:+.3%}"
        return (f"{self.name:13s} {self.table_bytes:12d} {self.tables_dense:12.4f} {target:>7s} "
                f"{self.peak_bytes / 2**20:12.1f} {self.peak_dense:10.3f} "
                f"{self.tables_peak_dense:17.3f} "
                f"{self.seconds:7.3f} {self.eval_dense:10.3f} {self.recall:9.4f} {self.ndcg:8.4f} {change:>18s}")


@dataclass
class Evaluations:
    variants: list  # of Variant, dense first

    def lines(self) -> list[str]:
        return [f"{'variant':13s} {'table bytes':>12s} {'tables/dense':>12s} {'target':>7s} {'eval peak MB':>12s} "
                f"{'peak/dense':>10s} {'tables+peak/dense':>17s} {'eval s':>7s} {'eval/dense':>10s} "
                f"{'recall@20':>9s} {'ndcg@20':>8s} {'Δ recall vs masked':>18s}"] \
            + [variant.line() for variant in self.variants]


def parse_args(argv=None):
    parser = arg_parser(__doc__.splitlines()[0])
    parser.set_defaults(models="BPR", epochs=2)
    parser.add_argument("--sparsities", default="0.5,0.8,0.9")
    parser.add_argument("--embedding_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eval_memory_mb", type=float, default=None,
                        help="the plugin's full-sort score budget (default: its own default)")
    return parser.parse_args(argv)


def results(args):
    """:class:`Threads`, :class:`Trained`, then the :class:`Evaluations`, each as it is measured."""
    sparsities = [float(s) for s in args.sparsities.split(",")]
    yield Threads(torch.__version__, torch.get_num_threads())

    sizes = {"eval_memory_mb": args.eval_memory_mb} if args.eval_memory_mb else {}
    run = prepare_run("BPR", args, method="dense", embedding_size=args.embedding_size, **sizes)
    trained = run.dense().state_dict
    names = list(run.prunable)
    device = run.config["device"]
    config, dataset = run.config, run.train_data.dataset
    dense_tables = sum(trained[n].numel() * trained[n].element_size() for n in names)
    yield Trained(args.dataset, args.embedding_size, args.epochs, names, dense_tables, config["eval_batch_size"],
                  str(device))

    out_dir = tempfile.mkdtemp(prefix="lth-compact-")
    weights = {n: trained[n].to(device) for n in names}
    variants = {"dense": (run.model, dense_tables, None)}
    run.model.load_state_dict(trained)
    for sparsity in sparsities:
        masks = pruning.magnitude_prune(weights, full_masks(weights), sparsity, "global")
        state = {k: (v * masks[k].cpu() if k in masks else v) for k, v in trained.items()}
        masked = builder.new_model(config, dataset)
        masked.load_state_dict(state)
        variants[f"masked {sparsity}"] = (masked, dense_tables, sparsity)
        for values in ("fp32", "int8"):
            path = export.write_export(os.path.join(out_dir, f"s{sparsity}-{values}.pt"), state, masks,
                                       values=values)
            model = export.compact_model(path, config, dataset)
            table_bytes = sum(v for k, v in compact.resident_bytes(model).items() if k != "(rest)")
            label = "compact" if values == "fp32" else "int8"
            variants[f"{label} {sparsity}"] = (model, table_bytes, sparsity)

    trainers = {name: evaluation_trainer(config, model.eval(), tensorboard_dir=out_dir)
                for name, (model, _, _) in variants.items()}
    times = {name: [] for name in variants}
    peaks = {name: [] for name in variants}
    scores = {}
    for repeat in range(args.repeats + 1):  # the first pass warms up, untimed
        order = list(variants) if repeat % 2 == 0 else list(variants)[::-1]
        for name in order:
            invalidate_caches(variants[name][0])

            def evaluate(name=name):
                scores[name] = trainers[name].evaluate(run.test_data, load_best_model=False, show_progress=False)

            seconds, peak = peak_above_resident(evaluate, device)
            if repeat:
                times[name].append(seconds)
                peaks[name].append(peak)

    dense_s = statistics.median(times["dense"])
    dense_peak = statistics.median(peaks["dense"])
    rows = []
    for name, (_, table_bytes, sparsity) in variants.items():
        target = None
        if name.startswith("compact"):
            target = (1 - sparsity) + 0.05
        elif name.startswith("int8"):
            target = (1 - sparsity) / 4 + 0.08
        recall, ndcg = float(scores[name]["recall@20"]), float(scores[name]["ndcg@20"])
        reference = scores.get(f"masked {sparsity}") if sparsity is not None else None
        change = None
        if reference is not None and not name.startswith("masked"):
            base = float(reference["recall@20"])
            change = 0.0 if recall == base else (recall - base) / base
        seconds, peak = statistics.median(times[name]), statistics.median(peaks[name])
        rows.append(Variant(name, table_bytes, table_bytes / dense_tables, target, peak,
                            peak / dense_peak if dense_peak else float("nan"),
                            (table_bytes + peak) / (dense_tables + dense_peak), seconds, seconds / dense_s,
                            recall, ndcg, change))
    yield Evaluations(rows)


def main(argv=None) -> None:
    show(results(parse_args(argv)))


if __name__ == "__main__":
    main()
