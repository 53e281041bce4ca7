"""Wall time and metrics of one search run in one process and through RecBole's distributed path (--nproc).

Runs the same OMP search (BPR, ``--dataset``, a dense ticket and one ticket
per ``--sparsities``) as

* ``plain``: one process, RecBole's ordinary path (no ``nproc``), at the
  run's seed and at ``--noise_seeds`` other seeds (how much the test metrics
  move from seed to seed: the noise a distributed run is judged against);
* ``nproc=1``: the distributed path with one process (gloo on the CPU, NCCL
  with ``--use_gpu``);
* ``nproc=N``: N processes (``--nproc``; gloo on the CPU), sharing the
  machine's cores (each process gets cores // N threads).

Every variant gets its own run directory; searches run one after the other
in this process (each launch spawns its own ranks), and the script prints
each one's wall time and its tickets' test metrics.

    python benchmarks/bench_distributed.py                 # BPR on ml-1m, CPU
    python benchmarks/bench_distributed.py --use_gpu --nproc 1
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
from time import perf_counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import arg_parser  # noqa: E402

import recbole_lth  # noqa: E402


def search(args, root: str, **extra) -> tuple[float, dict]:
    settings = {
        "data_path": args.data_path, "state": "WARNING", "show_progress": False, "progress": False,
        "epochs": args.epochs, "target_sparsities": args.sparsities, "output_root": root,
        "use_gpu": bool(args.use_gpu), "gpu_id": args.gpu_id, "eval_step": 1, "stopping_step": 100, **extra,
    }
    started = perf_counter()
    result = recbole_lth.run(model="BPR", dataset=args.dataset, method="omp", config_dict=settings)
    return perf_counter() - started, {r["ticket"]: r for r in result.rows}


def main() -> None:
    parser = arg_parser(__doc__.splitlines()[0])
    parser.set_defaults(epochs=5)
    parser.add_argument("--sparsities", default="0.5,0.8")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--noise_seeds", default="2021,2022")
    parser.add_argument("--metric", default="recall@20")
    args = parser.parse_args()
    args.sparsities = [float(s) for s in args.sparsities.split(",")]
    root = tempfile.mkdtemp(prefix="lth-distributed-")
    variants = {f"plain seed {args.seed}": {"seed": args.seed}}
    variants.update({f"plain seed {s}": {"seed": int(s)} for s in args.noise_seeds.split(",") if s})
    variants["nproc=1"] = {"seed": args.seed, "nproc": 1}
    if args.nproc > 1 and not args.use_gpu:
        variants[f"nproc={args.nproc}"] = {"seed": args.seed, "nproc": args.nproc}
    timings, rows = {}, {}
    for name, extra in variants.items():
        timings[name], rows[name] = search(args, os.path.join(root, name.replace(" ", "_")), **extra)
        print(f"{name}: {timings[name]:.1f} s", flush=True)

    metric = f"test_{args.metric}"
    tickets = list(rows[f"plain seed {args.seed}"])
    reference = f"plain seed {args.seed}"
    print(f"\nBPR on {args.dataset}, omp at {args.sparsities}, {args.epochs} epochs per ticket; {metric} per ticket; "
          f"wall seconds of the whole search (relative to {reference})")
    print(f"{'variant':18s} {'wall s':>8s} {'/ plain':>8s} " + " ".join(f"{t:>12s}" for t in tickets))
    for name in variants:
        values = " ".join(f"{rows[name].get(t, {}).get(metric, float('nan')):12.4f}" for t in tickets)
        print(f"{name:18s} {timings[name]:8.1f} {timings[name] / timings[reference]:8.2f} {values}")
    seeds = [n for n in variants if n.startswith("plain")]
    for ticket in tickets:
        spread = [rows[n][ticket][metric] for n in seeds]
        noise = statistics.pstdev(spread) if len(spread) > 1 else float("nan")
        gaps = {n: rows[n][ticket][metric] - rows[reference][ticket][metric] for n in variants if n.startswith("nproc")}
        print(f"{ticket}: seed-to-seed std {noise:.4f} (range {max(spread) - min(spread):.4f}); "
              + ", ".join(f"{n} - plain {g:+.4f}" for n, g in gaps.items()))


if __name__ == "__main__":
    main()
