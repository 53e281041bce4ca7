"""``run_recbole_lth.py --help`` and ``--version``, generated from the declarations.

The methods come from the registry (their one-line summaries), the keys from
their ``Key`` declarations (help line and allowed values) and their defaults
from the properties files that set them, so there is no second list to keep
in step: a method or key without a help line fails a test.
"""
from __future__ import annotations

import textwrap

from recbole_lth import methods
from recbole_lth.core import settings

USAGE = """usage: run_recbole_lth.py --model=MODEL --dataset=DATASET [--method=METHOD | --method=[M1,M2,...]]
                          [--config_files="a.yaml b.yaml"] [--key=value ...]
       run_recbole_lth.py report|export|compare ...   (run_recbole_lth.py report -h)
       run_recbole_lth.py tune --params_file=FILE [--max_evals=N] [--tune_dir=DIR] [search keys ...]

Sparse embedding tables for RecBole, measured with RecBole's full-sort metrics.
Values are parsed as yaml (--target_sparsities=[0.5,0.9] is a list); settings
layer as in RecBole: RecBole's defaults < properties/overall.yaml <
properties/<method>.yaml < --config_files < --key=value.  Any RecBole key of the
model and dataset works as in run_recbole.py.  --nproc=N runs the search in N
processes through RecBole's distributed path (gloo on the CPU, NCCL on GPUs; one
process per GPU); rank 0 writes the run directory.  --seeds=[2020,2021,2022]
runs the study once per seed (summary.csv/.md/.tex: mean, std, paired CIs);
--workers=N trains independent tickets at once (N processes, or Ray tasks with
--executor=ray), with the very results of one process."""


def defaults() -> dict[str, str]:
    """Each plugin key's default as text: the file that sets it, and the
    variants that change it (``kd_weight``: 0; imp_kd, omp_kd, rp_kd: 1.0)."""
    folder = settings.properties_dir()
    base = settings.read_yaml(folder / "overall.yaml")
    for method in methods.METHODS.values():
        if method.base is None:
            base.update({k: v for k, v in settings.read_yaml(folder / f"{method.name}.yaml").items() if k not in base})
    text = {k: repr(v) if isinstance(v, str) else str(v).replace("None", "null") for k, v in base.items()}
    changed: dict[tuple[str, str], list[str]] = {}
    for method in methods.METHODS.values():
        if method.base is not None:
            for key, value in settings.read_yaml(folder / f"{method.name}.yaml").items():
                if value != base.get(key):
                    changed.setdefault((key, str(value)), []).append(method.name)
    for (key, value), names in changed.items():
        text[key] = f"{text.get(key, '')} ({', '.join(names)}: {value})"
    return text


def _block(rows: list[tuple[str, str]], indent: int = 26) -> list[str]:
    lines = []
    for name, body in rows:
        wrapped = textwrap.wrap(body, width=100 - indent) or [""]
        lines.append(f"  {name:<{indent - 2}}{wrapped[0]}")
        lines += [" " * indent + w for w in wrapped[1:]]
    return lines


def help_text() -> str:
    lines = [USAGE, "", "methods (--method):"]
    lines += _block([(m.name, m.summary) for m in methods.METHODS.values()])
    default = defaults()
    owner = {}
    for method in methods.METHODS.values():
        for key in method.keys:
            owner.setdefault(key.name, method.name)
    lines += ["", "keys (default; allowed values; meaning):"]
    for key in methods.all_keys().values():
        where = f" [{owner[key.name]}]" if key.name in owner else ""
        lines += _block([(key.name, f"{default.get(key.name, 'RecBole')}{where}; {key.allowed}; {key.help}")])
    lines += ["", "RecBole keys the plugin checks before a run (defaults: RecBole's, or overall.yaml):"]
    lines += _block([(key.name, f"{default.get(key.name, 'RecBole')}; {key.allowed}; {key.help}")
                     for key in settings.RECBOLE_KEYS])
    lines += ["", "README.md explains every method and key in full."]
    return "\n".join(lines)


def version_text() -> str:
    import recbole
    import torch

    from recbole_lth.version import VERSION

    return f"recbole_lth {VERSION}, RecBole {recbole.__version__}, torch {torch.__version__}"
