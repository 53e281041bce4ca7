"""Per-epoch training time of DSL vs the dense model (and optionally a static random mask, RP).

They are trained side by side in one process on the same data loader with
alternating epochs; the script prints the median epoch times, the ratio
DSL/dense (DSL/RP with --with_rp), and the exploration share: wall time of all
exploration updates over all DSL training epochs (target: <= 3% at the
default ΔT).  On a shared machine pass --threads 1: short bursts of
multi-threaded tensor work are what an oversubscribed CPU slows most.

    python benchmarks/bench_dsl.py --models BPR --epochs 3 --threads 1   # ml-1m, default ΔT
    python benchmarks/bench_dsl.py --models BPR,LightGCN --interval 100 --with_rp
"""
from __future__ import annotations

import os
import sys
from time import perf_counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import yaml  # noqa: E402

from common import alternate, arg_parser, masked_trainer, prepare_run, recbole_trainer  # noqa: E402

from recbole_lth.core.settings import properties_dir  # noqa: E402
from recbole_lth.methods import dsl  # noqa: E402

DEFAULTS = yaml.safe_load(open(properties_dir() / "dsl.yaml"))


def main() -> None:
    parser = arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--update_epochs", type=float, default=DEFAULTS["dsl_update_epochs"], help="ΔT (epochs)")
    parser.add_argument("--grow", default=DEFAULTS["dsl_grow"], help="dsl_grow (grow score)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--with_rp", action="store_true", help="also time a static random mask")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"dataset {args.dataset}, sparsity {args.sparsity}, ΔT {args.update_epochs} epochs, grow {args.grow}, "
          f"{args.epochs} timed epochs "
          f"per variant (+1 warm-up), torch {torch.__version__}, threads {torch.get_num_threads()}")
    for model_name in args.models.split(","):
        run = prepare_run(model_name, args, method="dsl", dsl_update_epochs=args.update_epochs, dsl_grow=args.grow)
        device = run.config["device"]
        trainers = {"dense": recbole_trainer(run)}
        for name in ("rp", "dsl") if args.with_rp else ("dsl",):
            trainers[name] = masked_trainer(run, args.sparsity)  # RP and DSL start from the same mask
        steps_per_epoch = len(run.train_data)
        explorer = dsl.explorer(run)  # the method's own schedule and scores
        explorer.attach(run, trainers["dsl"])
        dsl_seconds = []

        def dsl_epoch(e):
            started = perf_counter()
            trainers["dsl"]._train_epoch(run.train_data, e)
            dsl_seconds.append(perf_counter() - started)

        variants = {"dense": lambda e: trainers["dense"]._train_epoch(run.train_data, e), "dsl": dsl_epoch}
        if args.with_rp:
            variants["rp"] = lambda e: trainers["rp"]._train_epoch(run.train_data, e)
        alternate(variants, 1, device)  # warm-up (allocator, caches)
        medians = alternate(variants, args.epochs, device)
        updates = explorer.updates
        share = explorer.explore_seconds / sum(dsl_seconds)
        per_update = explorer.explore_seconds / updates if updates else float("nan")
        report = trainers["dsl"].mask.report()
        rp = f", rp {medians['rp']:.3f} (dsl/rp {medians['dsl'] / medians['rp']:.3f})" if args.with_rp else ""
        print(
            f"{model_name:9s} device {device}: {steps_per_epoch} steps/epoch, "
            f"dense {medians['dense']:.3f} s/epoch, dsl {medians['dsl']:.3f}{rp}; "
            f"ratio dsl/dense {medians['dsl'] / medians['dense']:.3f}; "
            f"{updates} updates in {len(dsl_seconds)} DSL epochs, {per_update * 1000:.1f} ms/update, "
            f"exploration share {100 * share:.2f}% (active {report.total_active}/{report.total})"
        )


if __name__ == "__main__":
    main()
