"""Per-epoch training time of a masked model vs the same model dense.

Both are trained side by side in one process on the same data loader, with
alternating epochs; the script prints the median epoch time of each and the
ratio masked/dense (targets: <= 1.10 on CPU, <= 1.05 on GPU).

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
        dense_model = run.model
        masked_model = copy.deepcopy(run.model)
        dense = get_trainer(config["MODEL_TYPE"], config["model"])(config, dense_model)
        params = select_prunable(masked_model, "embeddings")
        masks = pruning.random_mask(params, args.sparsity, "global", seed=0)
        masked = sparse_trainer(config, masked_model, ParameterMask(params, masks))
        variants = {
            "dense": lambda e: dense._train_epoch(run.train_data, e),
            "masked": lambda e: masked._train_epoch(run.train_data, e),
        }
        alternate(variants, 1, device)  # warm-up (allocator, caches)
        medians = alternate(variants, args.epochs, device)
        report = masked.mask.report()
        print(f"{model_name:9s} device {device}: dense {medians['dense']:.3f} s/epoch, "
              f"masked {medians['masked']:.3f} s/epoch (sparsity {report.sparsity:.3f}, "
              f"nonzero {report.total_nonzero}/{report.total}), ratio masked/dense "
              f"{medians['masked'] / medians['dense']:.3f}")


if __name__ == "__main__":
    main()
