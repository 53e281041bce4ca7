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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from common import alternate, arg_parser, masked_trainer, prepare_run, recbole_trainer  # noqa: E402



def main() -> None:
    args = arg_parser(__doc__.splitlines()[0]).parse_args()
    print(f"dataset {args.dataset}, sparsity {args.sparsity}, {args.epochs} timed epochs per variant "
          f"(+1 warm-up), torch {torch.__version__}, threads {torch.get_num_threads()}")
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
        print(f"{model_name:9s} device {device}: " + ", ".join(f"{n} {t:.3f} s/epoch" for n, t in medians.items())
              + f" (sparsity {report.sparsity:.3f}, nonzero {report.total_nonzero}/{report.total}); "
              f"masked/dense {medians['masked'] / medians['dense']:.3f}, "
              f"masked/recbole {medians['masked'] / medians['recbole']:.3f}")


if __name__ == "__main__":
    main()
