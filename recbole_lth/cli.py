"""Command line: ``python run_recbole_lth.py --model=BPR --dataset=ml-100k --method=imp``.

Arguments follow RecBole's ``run_recbole.py``: ``--model``, ``--dataset``,
``--config_files="a.yaml b.yaml"`` and any ``--key=value`` (yaml-parsed, so
``--target_sparsities=[0.5,0.9]`` is a list).  Bad input prints one line
naming the key and the allowed values and exits with status 2.
"""
from __future__ import annotations

import sys

from recbole_lth import commands
from recbole_lth.api import run_request
from recbole_lth.core.errors import ConfigError, RankFailed, RunDamaged, TrainingDiverged
from recbole_lth.core.settings import parse_value
from recbole_lth.helptext import help_text, version_text
from recbole_lth.request import Request
from recbole_lth.tune import tune


def parse_args(argv: list[str]) -> dict:
    options: dict = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError("arguments", arg, "--key=value or --key value pairs")
        body = arg[2:]
        if "=" in body:
            key, text = body.split("=", 1)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            key, text = body, argv[i + 1]
            i += 1
        else:
            raise ConfigError(body, None, f"a value: --{body}=VALUE")
        options[key] = text if key == "config_files" else parse_value(text)
        i += 1
    return options


# Ctrl-C: one line instead of a traceback per process (every ticket is
# written atomically, so nothing finished is lost).
INTERRUPTED = "recbole_lth: interrupted (Ctrl-C); every finished ticket is kept, and the same command resumes"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in commands.COMMANDS:  # report / export / compare on finished run directories
        return commands.main(argv)
    if "-h" in argv or "--help" in argv:
        print(help_text())
        return 0
    if "--version" in argv:
        print(version_text())
        return 0
    tuning = bool(argv) and argv[0] == "tune"
    if tuning:
        argv = argv[1:]
    try:
        options = parse_args(argv)
        if tuning:
            tune_dir = options.pop("tune_dir", None)
            params_file, max_evals = options.pop("params_file", None), options.pop("max_evals", 10)
            path = tune(params_file, max_evals, Request.from_options(options), tune_dir=tune_dir)
            print(f"tuning: {path}")
            return 0
        result = run_request(Request.from_options(options))
    except ConfigError as err:
        print(f"recbole_lth: {err}", file=sys.stderr)
        return 2
    except (TrainingDiverged, RunDamaged) as err:  # a failed run: its finished tickets are kept
        print(f"recbole_lth: {err}", file=sys.stderr)
        return 1
    except RankFailed as err:  # a process of a --nproc run: its one line and exit code
        print(f"recbole_lth: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # a read-only run directory, a full disk: no traceback (finished tickets are kept)
        print(commands.os_error_line(err), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    print(f"results: {result.results_csv}")
    return 0
