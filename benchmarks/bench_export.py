"""Bytes and full-sort evaluation time of compact-exported tickets vs the dense model.

Trains the dense model for ``--epochs`` through the plugin (``method=dense``),
then builds tickets at ``--sparsities`` by one-shot global magnitude pruning
of the trained tables (not retrained: this measures size and time, not
accuracy), writes each with ``recbole_lth.deploy.export``, loads it back and times
RecBole's full-sort test evaluation of every variant side by side in one
process (alternating order, median of ``--repeats``).  For BPR it also times
the bare scoring product (all users x all items) dense vs a CSR user table,
to show what a sparse kernel would and would not buy.

    python benchmarks/bench_export.py                          # BPR on ml-1m
    python benchmarks/bench_export.py --models BPR,LightGCN --epochs 1
"""
from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
from time import perf_counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from common import arg_parser, prepare_run, timed  # noqa: E402

from recbole_lth.core import pruning
from recbole_lth.core.masking import ParameterMask, full_masks  # noqa: E402
from recbole_lth.deploy import export  # noqa: E402
from recbole_lth.engine.trainer import invalidate_caches, sparse_trainer  # noqa: E402


def _file_bytes(payload) -> int:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return len(buffer.getvalue())


def _median_time(fn, repeats: int) -> float:
    return statistics.median(timed(fn, "cpu") for _ in range(repeats))


def bench_model(model_name: str, args) -> None:
    run = prepare_run(model_name, args, method="dense", embedding_size=args.embedding_size)
    trained = run.dense().state_dict
    names = list(run.prunable)
    device = run.config["device"]
    dense_table = sum(trained[n].numel() * trained[n].element_size() for n in names)
    rest = sum(v.numel() * v.element_size() for k, v in trained.items() if k not in names)

    out_dir = tempfile.mkdtemp(prefix="lth-export-")
    variants = {"dense": (trained, run.full_masks())}
    weights = {n: trained[n].to(device) for n in names}
    for sparsity in args.sparsities:
        masks = pruning.magnitude_prune(weights, full_masks(weights), sparsity, "global")
        state = {k: (v * masks[k].cpu() if k in masks else v) for k, v in trained.items()}
        path = export.write_export(os.path.join(out_dir, f"s{sparsity}.pt"), state, masks)
        started = perf_counter()
        loaded, loaded_masks, _ = export.read_export(path)
        unpack_seconds = perf_counter() - started
        assert all(torch.equal(loaded[k], state[k]) for k in state)
        variants[f"s={sparsity}"] = (loaded, loaded_masks, path, unpack_seconds)

    trainer = sparse_trainer(run.config, run.model, ParameterMask(run.prunable))

    def evaluate(state):
        run.model.load_state_dict(state)
        invalidate_caches(run.model)
        return lambda: trainer.evaluate(run.test_data, load_best_model=False, show_progress=False)

    times = {name: [] for name in variants}
    results = {}
    for repeat in range(args.repeats + 1):  # the first pass warms up, untimed
        order = list(variants) if repeat % 2 == 0 else list(variants)[::-1]
        for name in order:
            fn = evaluate(variants[name][0])
            seconds = timed(lambda: results.__setitem__(name, fn()), device)
            if repeat:
                times[name].append(seconds)
    trainer.close()

    print(f"\n{model_name} on {args.dataset}, embedding_size {args.embedding_size}, dense trained "
          f"{args.epochs} epoch(s); tickets = one-shot global magnitude masks of the trained tables "
          f"(not retrained). Prunable tables {names}; non-prunable parameters {rest} bytes.")
    print(f"{'variant':10s} {'table bytes':>12s} {'file bytes':>11s} {'file/dense table':>16s} "
          f"{'bound (1-s)+.04':>15s} {'unpack s':>9s} {'full-sort eval s':>16s} {'eval/dense':>10s} "
          f"{'test recall@20':>14s}")
    dense_eval = statistics.median(times["dense"])
    dense_file = _file_bytes(trained)
    for name, variant in variants.items():
        evaluate_s = statistics.median(times[name])
        recall = float(results[name].get("recall@20", float("nan")))
        if name == "dense":
            print(f"{name:10s} {dense_table:12d} {dense_file:11d} {dense_file / dense_table:16.4f} "
                  f"{'':>15s} {'':>9s} {evaluate_s:16.3f} {1.0:10.3f} {recall:14.4f}")
            continue
        sparsity = float(name.split("=")[1])
        _, masks, path, unpack_seconds = variant
        kept = sum(int(m.sum()) for m in masks.values())
        table = sum(export.table_export_bytes(m.numel(), int(m.sum())) for m in masks.values())
        size = os.path.getsize(path)
        print(f"{name:10s} {table:12d} {size:11d} {size / dense_table:16.4f} {(1 - sparsity) + 0.04:15.4f} "
              f"{unpack_seconds:9.3f} {evaluate_s:16.3f} {evaluate_s / dense_eval:10.3f} {recall:14.4f}"
              f"   ({kept} kept)")

    if model_name == "BPR":
        print("scoring kernel only (all users x all items, median of "
              f"{args.repeats}): dense U@I^T vs CSR(U)@I^T")
        for name, variant in variants.items():
            users, items = variant[0]["user_embedding.weight"], variant[0]["item_embedding.weight"]
            csr = users.to_sparse_csr()
            dense_s = _median_time(lambda: users @ items.T, args.repeats)
            sparse_s = _median_time(lambda: torch.sparse.mm(csr, items.T), args.repeats)
            print(f"  {name:10s} dense {dense_s:.4f} s, CSR {sparse_s:.4f} s, CSR/dense {sparse_s / dense_s:.2f}")


def main() -> None:
    parser = arg_parser(__doc__.splitlines()[0])
    parser.set_defaults(models="BPR", epochs=2)
    parser.add_argument("--sparsities", default="0.5,0.9")
    parser.add_argument("--embedding_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    args.sparsities = [float(s) for s in args.sparsities.split(",")]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for model_name in args.models.split(","):
        bench_model(model_name, args)


if __name__ == "__main__":
    main()
