"""Wall time of one seeded study sequentially, with local workers and with Ray tasks, side by side.

One study (BPR on ``--dataset``, ``--methods`` at ``--sparsities``, three
seeds: every ticket independent once its seed's dense model exists) run as

* ``workers=1, 1 thread`` / ``workers=2, 1 thread``: one torch thread per
  ticket in both, so the ratio is the executor's own overhead against a
  perfect 2× (the target: >= 1.8×);
* ``workers=1`` (torch's threads: all cores, one ticket at a time) /
  ``workers=2`` (cores // 2 threads each) / ``executor=ray`` (2 Ray tasks): what
  a user gets with the machine's threads (targets: >= 1.3× and >= 1.25×).

Each variant runs in its own study folder, one after another in this process.
It prints the wall time, the CPU seconds per wall second (the whole machine's,
from /proc/stat: run it alone), the speed-ups, and checks that the
``summary.csv`` of the variants with the same threads per ticket are identical.

    python benchmarks/bench_parallel.py
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from time import perf_counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import recbole_lth  # noqa: E402
from recbole_lth.core import paths  # noqa: E402
from recbole_lth.core.settings import parse_value  # noqa: E402


def machine_cpu_seconds() -> float:
    """User + system time of every core so far (Linux /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system = (int(x) for x in fields[:3])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def study(args, root: Path, **extra) -> tuple[float, float, Path]:
    settings = {"state": "WARNING", "show_progress": False, "progress": False, "epochs": args.epochs,
                "stopping_step": 100, "target_sparsities": args.sparsities, "seeds": args.seeds,
                "run_dir": str(root), **extra}
    cpu, started = machine_cpu_seconds(), perf_counter()
    recbole_lth.run(model="BPR", dataset=args.dataset, method=args.methods, config_dict=settings)
    wall = perf_counter() - started
    return wall, (machine_cpu_seconds() - cpu) / wall, paths.StudyPaths(root).summary_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--methods", default="[omp,rp,dsl,snip]")
    parser.add_argument("--sparsities", default="[0.5,0.8]")
    parser.add_argument("--seeds", default="[2020,2021,2022]")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    args.methods, args.sparsities, args.seeds = (parse_value(x) for x in (args.methods, args.sparsities, args.seeds))
    n = args.workers
    variants = {
        "workers=1, 1 thread": {"workers": 1, "worker_threads": 1},
        f"workers={n}, 1 thread": {"workers": n, "worker_threads": 1},
        "workers=1": {"workers": 1},
        f"workers={n}": {"workers": n},
        f"ray, {n} tasks": {"workers": n, "executor": "ray"},
    }
    root = Path(tempfile.mkdtemp(prefix="lth-parallel-"))
    measured = {}
    for i, (name, extra) in enumerate(variants.items()):
        measured[name] = study(args, root / f"v{i}", **extra)
        print(f"{name}: {measured[name][0]:.1f} s wall, {measured[name][1]:.2f} CPU s per wall s", flush=True)

    tickets = len(args.seeds) * (1 + len(args.methods) * len(args.sparsities))
    print(f"\nBPR on {args.dataset}, {args.methods} at {args.sparsities}, seeds {args.seeds} ({tickets} tickets, "
          f"{args.epochs} epochs each), {os.cpu_count()} cores")
    print("| variant | wall s | CPU s / wall s | speed-up | against |")
    print("|---|---|---|---|---|")
    base = {name: ("workers=1, 1 thread" if "1 thread" in name else "workers=1") for name in variants}
    for name, (wall, busy, _) in measured.items():
        reference = base[name]
        print(f"| {name} | {wall:.1f} | {busy:.2f} | {measured[reference][0] / wall:.2f}× | {reference} |")
    same_threads = [measured[name][2].read_text() for name in variants if "1 thread" in name]
    machine_threads = [measured[name][2].read_text() for name in variants if "1 thread" not in name]
    print(f"\nsummary.csv identical, 1 thread per ticket (workers=1 vs {n}): {len(set(same_threads)) == 1}")
    print(f"summary.csv identical, the machine's threads (workers=1, {n}, ray): {len(set(machine_threads)) == 1}")
    print(f"summary.csv identical across thread counts: {len(set(same_threads + machine_threads)) == 1}")


if __name__ == "__main__":
    main()
