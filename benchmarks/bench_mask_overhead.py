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

import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from recbole.utils import get_trainer, init_seed  # noqa: E402

from common import alternate, arg_parser, prepare_run  # noqa: E402

from recbole_lth import pruning  # noqa: E402
from recbole_lth.masking import ParameterMask, select_prunable  # noqa: E402
from recbole_lth.trainer import sparse_trainer  # noqa: E402


def main() -> None:
    args = arg_parser(__doc__.splitlines()[0]).parse_args()
    print(f"dataset {args.dataset}, sparsity {args.sparsity}, {args.epochs} timed epochs per variant "
          f"(+1 warm-up), torch {torch.__version__}, threads {torch.get_num_threads()}")
    for model_name in args.models.split(","):
        run = prepare_run(model_name, args)
        config, device = run.config, run.config["device"]
        init_seed(config["seed"], config["reproducibility"])
        models = {name: copy.deepcopy(run.model) for name in ("recbole", "dense", "masked")}
        trainers = {"recbole": get_trainer(config["MODEL_TYPE"], config["model"])(config, models["recbole"])}
        for name, sparsity in (("dense", 0.0), ("masked", args.sparsity)):
            params = select_prunable(models[name], "embeddings")
            masks = pruning.random_mask(params, sparsity, "global", seed=0)
            trainers[name] = sparse_trainer(config, models[name], ParameterMask(params, masks))
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
