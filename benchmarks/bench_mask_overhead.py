"""Per-epoch training time of a masked model vs the same model dense.

Three variants of one model train side by side in one process on the same
data loader, alternating epochs (medians):
  recbole  RecBole's own Trainer, untouched (what a user runs without us),
  dense    our trainer with a full mask (the pipeline's sparsity-0 row),
  masked   our trainer with a random mask at --sparsity.
It prints masked/dense (the cost of the mask; targets: <= 1.10 on CPU,
<= 1.05 on GPU) and masked/recbole.

    python benchmarks/bench_mask_overhead.py                # BPR and LightGCN on ml-1m
    python benchmarks/bench_mask_overhead.py --use_gpu --epochs 5
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Setup, alternate, arg_parser, masked_trainer, prepare_run, recbole_trainer, show  # noqa: E402


@dataclass
class Overhead:
    """One model's median seconds per epoch of each variant, and its masked model's size."""

    model: str
    device: str
    seconds: dict  # variant -> median s/epoch: recbole, dense, masked
    sparsity: float
    nonzero: int
    total: int

    @property
    def masked_dense(self) -> float:
        return self.seconds["masked"] / self.seconds["dense"]

    @property
    def masked_recbole(self) -> float:
        return self.seconds["masked"] / self.seconds["recbole"]

    def lines(self) -> list[str]:
        return [f"{self.model:9s} device {self.device}: "
                + ", ".join(f"{n} {t:.3f} s/epoch" for n, t in self.seconds.items())
                + f" (sparsity {self.sparsity:.3f}, nonzero {self.nonzero}/{self.total}); "
                f"masked/dense {self.masked_dense:.3f}, masked/recbole {self.masked_recbole:.3f}"]


def parse_args(argv=None):
    return arg_parser(__doc__.splitlines()[0]).parse_args(argv)


def results(args):
    """The :class:`Setup`, then one :class:`Overhead` per model of ``--models``, each as it is measured."""
    yield Setup.of(args)
    for model_name in args.models.split(","):
        run = prepare_run(model_name, args)
        device = run.config["device"]
        trainers = {
            "recbole": recbole_trainer(run),
            "dense": masked_trainer(run, 0.0),
            "masked": masked_trainer(run, args.sparsity),
        }
        variants = {name: (lambda e, t=t: t._train_epoch(run.train_data, e)) for name, t in trainers.items()}
        alternate(variants, 1, device)  # warm-up (allocator, caches)
        medians = alternate(variants, args.epochs, device)
        report = trainers["masked"].mask.report()
        yield Overhead(model_name, str(device), medians, report.sparsity, report.total_nonzero, report.total)


def main(argv=None) -> None:
    show(results(parse_args(argv)))


if __name__ == "__main__":
    main()
