"""Every RecBole sequential and context-aware model through the plugin: one OMP ticket at 0.5, 1 epoch, tiny data.

Prints a Markdown table (model, family, result: the ticket's sparsity and test metric, or the one line the
plugin refused it with, or the first line of the error raised inside RecBole), for docs/architecture.md.

    python benchmarks/try_models.py --out /tmp/try_models
"""
from __future__ import annotations

import argparse
import random
import sys
import traceback
from pathlib import Path

import recbole_lth
from recbole_lth.core import tasks
from recbole_lth.core.errors import ConfigError


def write_data(root: Path) -> str:
    """Tiny histories with timestamps and a 0/1 label with one side feature: both families read them."""
    rng = random.Random(0)
    folder = root / "tinyall"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float\tlabel:float\tslot:token"]
    for user in range(1, 61):
        base, start = (1 if user % 2 else 21), rng.randrange(20)
        for t in range(12):
            item = base + (start + t) % 20
            lines.append(f"{user}\t{item}\t{1000 * user + t}\t{int(rng.random() < 0.7)}\t{item % 4}")
    (folder / "tinyall.inter").write_text("\n".join(lines) + "\n")
    return str(root)


def try_one(model: str, task, data_path: str, out: Path) -> str:
    settings = {"data_path": data_path, "epochs": 1, "state": "ERROR", "show_progress": False, "progress": False,
                "target_sparsities": [0.5], "output_root": str(out / "runs"), "load_col": None}
    if task is tasks.SEQUENTIAL:
        settings.update(MAX_ITEM_LIST_LENGTH=8, topk=[5, 10], valid_metric="Recall@10")
    else:
        settings.update(LABEL_FIELD="label")
    try:
        result = recbole_lth.run(model=model, dataset="tinyall", method="omp", config_dict=settings)
    except ConfigError as err:
        return f"refused: {str(err)[:160]}"
    except Exception as err:  # noqa: BLE001  (a model RecBole itself cannot build or train here)
        where = traceback.extract_tb(err.__traceback__)[-1]
        return f"fails in {Path(where.filename).name}:{where.lineno}: {type(err).__name__}: {str(err)[:100]}"
    row = next((r for r in result.rows if r["ticket"] == "omp_0.5"), None)
    if row is None:
        return "no omp ticket"
    metric = "test_recall@10" if task is tasks.SEQUENTIAL else "test_auc"
    return f"runs (sparsity {row['sparsity']:.3f}, {metric.removeprefix('test_')} {row.get(metric)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="try_models")
    args = parser.parse_args()
    out = Path(args.out)
    data_path = write_data(out / "data")
    print("| model | family | result |\n|---|---|---|")
    for task in (tasks.SEQUENTIAL, tasks.CONTEXT):
        for model in tasks.recommenders(task) + sorted(task.refused):
            print(f"| {model} | {task.name} | {try_one(model, task, data_path, out)} |", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
