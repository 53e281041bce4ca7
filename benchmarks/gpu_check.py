"""The GPU proof in one command: device tests, CPU vs device parity, costs, a yelp2018 study and its
energy, and a sequential and a CTR study.

Writes ``OUT/gpu_check.md`` and the raw CSVs (``tests.csv``, ``parity.csv``,
``costs.csv``, ``yelp2018.csv``, ``energy.csv``, ``families.csv``) and the
benchmarks' printed output (``costs.txt``).  Six parts, each with its own time budget (seconds,
also capped by ``--budget_s`` for the whole command); a part whose budget is
spent, or a step of it, is skipped with a line saying so, and the Markdown
file is rewritten after every part, so a run stopped early still returns
everything measured:

(a) ``tests/test_device.py`` through pytest (on CUDA when the device is);
(b) one short BPR ml-100k study (omp, rp at 0.5, 2 epochs) on the CPU and on
    the device: the stored ticket masks compared, metrics within the noise;
(c) ``bench_mask_overhead.py``, ``bench_epoch_cost.py`` and ``bench_compact.py``
    on the device, short (masked/dense, DSL's exploration share, PEP's and
    KD's epoch cost, validation vs its floor, compact peak memory vs dense);
(d) LightGCN on yelp2018 (dense, omp, dsl, pep at 0.5, ``--yelp_epochs`` epochs):
    wall per ticket, to size the full Table-3 run;
(e) ``energy_joules`` per ticket of (d) from NVML's total-energy counter
    (``nvidia-ml-py``; absent on the CPU, the report says why), sparse
    tickets relative to dense;
(f) the other model families on ml-100k, ``--family_epochs`` epochs per ticket:
    SASRec at RecBole's own settings (dense, omp, rp at 0.5; Recall/NDCG@20)
    and DeepFM as a CTR task (dense, omp, rp, dsl, pep at 0.5 and 0.8;
    AUC/LogLoss): wall and seconds per epoch per ticket.

    python benchmarks/gpu_check.py --out gpu_out --device cuda --data_path .gpu/datasets
    python benchmarks/gpu_check.py --out /tmp/rehearsal --device cpu --quick   # tiny data, 1 epoch, < 1 min
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]  # the benchmarks, and the checkout's plugin whatever the working directory

import torch  # noqa: E402

from recbole_lth.core import checkpoint, paths  # noqa: E402
from recbole_lth.engine.results import read_results  # noqa: E402
from recbole_lth.engine.run import TicketHook  # noqa: E402

PARTS = {  # name -> (section title, default budget in seconds)
    "tests": ("(a) Device tests", 70),
    "parity": ("(b) CPU vs device: BPR ml-100k, omp and rp at 0.5", 50),
    "costs": ("(c) Epoch cost, mask overhead, compact memory", 115),
    "yelp": ("(d) LightGCN on yelp2018: dense, omp, dsl, pep at 0.5", 120),
    "energy": ("(e) Energy per ticket (NVML)", 5),
    "families": ("(f) Sequential and CTR studies on the device", 120),
}  # 480 s in all: the device call's --budget_s
# Parity noise: the device's kernels sum in other orders than the CPU's, so
# two epochs of BPR drift by float rounding; a test metric further apart than
# this is a difference, not noise.
METRIC_NOISE = 0.005  # absolute, on test Recall@20 / NDCG@20 (a random ranking scores ~0.012 on ml-100k)
YELP_SPLIT = {"benchmark_filename": ["train", "valid", "test"]}
QUICK_DATASET = "gpu_check_tiny"
# --quick's stand-ins for ml-100k's histories (SASRec takes minutes an epoch there on a CPU) and labeled rows
QUICK_SEQUENCES, QUICK_LABELED = "gpu_check_seq", "gpu_check_ctr"
# Part (f): the sequential study runs first and may start tickets until this
# share of the part's budget is spent; the CTR study (more tickets, each cheaper) gets the rest.
SEQUENTIAL_SHARE = 0.5


class BudgetSpent(Exception):
    """Raised by :class:`Deadline` when the next ticket would start after its part's deadline."""


class Deadline(TicketHook):
    """Stops a study before a ticket that would start after ``deadline`` (perf_counter seconds)."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.skipped = None

    def attach(self, run, trainer) -> None:
        if time.perf_counter() > self.deadline:
            raise BudgetSpent("the part's budget is spent")


class EnergyMeter(TicketHook):
    """``energy_joules`` of each ticket (its training and test evaluation) from
    a total-energy counter in joules, and ``energy_since_last_joules`` since the
    previous ticket's row (a PEP ticket's includes its threshold search)."""

    def __init__(self, counter):
        self.counter = counter
        self.started = self.last = counter()

    def attach(self, run, trainer) -> None:
        self.started = self.counter()

    def row_fields(self) -> dict:
        now = self.counter()
        fields = {"energy_joules": round(now - self.started, 3), "energy_since_last_joules": round(now - self.last, 3)}
        self.last = now
        return fields


def nvml_counter(device: str):
    """``(counter in joules, what it is)`` or ``(None, why there is none)``."""
    if torch.device(device).type != "cuda":
        return None, "skipped: no CUDA (the device is the CPU; NVML measures NVIDIA GPUs only)"
    try:
        import pynvml
    except ImportError:
        return None, "absent: nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
        index = torch.device(device).index or 0
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # millijoules since the driver loaded
    except Exception as err:  # NVMLError_NotSupported, no driver, ...
        return None, f"absent: NVML's total-energy counter is not readable ({type(err).__name__}: {err})"
    name = pynvml.nvmlDeviceGetName(handle)
    return (lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0), \
        f"NVML nvmlDeviceGetTotalEnergyConsumption of GPU {index} ({name})"


def relative_to_dense(rows: list[dict], column: str) -> list[dict]:
    """``{ticket, method, sparsity, column, column/dense}`` for rows that have the column."""
    dense = next((r[column] for r in rows if r.get("ticket") == paths.DENSE_TICKET and r.get(column) is not None),
                 None)
    out = []
    for row in rows:
        if row.get(column) is None:
            continue
        ratio = row[column] / dense if dense else None
        out.append({"ticket": row["ticket"], "method": row["method"], "sparsity": row.get("sparsity"),
                    column: row[column], f"{column}/dense": None if ratio is None else round(ratio, 4)})
    return out


# ------------------------------------------------------------------ the report
class Report:
    """The Markdown file and CSVs under ``out``, rewritten after every part."""

    def __init__(self, out: Path, args):
        self.out, self.args = out, args
        self.sections = {name: [f"skipped: not reached (the run stopped before this part)"] for name in PARTS}
        self.header = []

    def section(self, name: str, lines: list[str]) -> None:
        self.sections[name] = lines
        self.write()

    def csv(self, name: str, rows: list[dict]) -> str:
        if rows:
            paths.write_csv(self.out / name, rows)
        return name

    def write(self) -> None:
        text = ["# GPU check", ""] + self.header + [""]
        for name, (title, _) in PARTS.items():
            text += [f"## {title}", ""] + self.sections[name] + [""]
        paths.write_text(self.out / "gpu_check.md", "\n".join(text))


def table(rows: list[dict], columns: list[str] | None = None) -> list[str]:
    if not rows:
        return ["(no rows)"]
    columns = columns or [c for c in rows[0]]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return lines


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


# ------------------------------------------------------------------ the parts
def part_tests(args, report: Report, budget: float) -> list[str]:
    """(a): pytest on tests/test_device.py (in --quick, only its compact lookups)."""
    xml = report.out / "tests.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "test_device.py"),
               f"--junitxml={xml}"]
    if args.quick:
        command += ["-k", "compact_lookups"]
    env = dict(os.environ)
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU rehearsal runs the cpu cases only
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=max(1.0, budget), env=env)
    except subprocess.TimeoutExpired:
        return [f"skipped: pytest did not finish within the part's budget ({budget:.0f} s)"]
    if not xml.is_file():
        return [f"pytest wrote no results (exit {done.returncode}):", "", "```", done.stdout[-2000:], "```"]
    rows = []
    for case in ElementTree.parse(xml).iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
        rows.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time") or 0)})
    report.csv("tests.csv", rows)
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("passed", "failed", "error", "skipped")}
    shown = " ".join(["pytest tests/test_device.py"] + command[7:])
    lines = [f"`{shown}` (exit {done.returncode}): "
             + ", ".join(f"{v} {k}" for k, v in counts.items()) + f"; cuda cases: "
             + f"{sum('[cuda' in r['test'] and r['outcome'] == 'passed' for r in rows)} passed, "
             + f"{sum('[cuda' in r['test'] and r['outcome'] == 'skipped' for r in rows)} skipped. Raw: tests.csv", ""]
    bad = [r for r in rows if r["outcome"] in ("failed", "error")]
    if bad:
        lines += ["Failed:"] + [f"- {r['test']}" for r in bad] + ["", "```", done.stdout[-3000:], "```"]
    return lines


def _study_settings(args, device: str, root: Path, epochs: int) -> dict:
    return {"epochs": epochs, "state": "WARNING", "show_progress": False, "progress": False,
            "use_gpu": device != "cpu", "gpu_id": args.gpu_id, "output_root": str(root), "data_path": args.data_path,
            "train_batch_size": 4096 if not args.quick else 32, "eval_batch_size": 40960}


def _stored_masks(run_dir) -> dict:
    run_paths = paths.RunPaths(run_dir)
    return {key: checkpoint.load(run_paths.ticket_weights(key))["masks"] for key in run_paths.stored_tickets()}


def part_parity(args, report: Report, budget: float) -> list[str]:
    """(b): the same study on the CPU and on the device; masks and metrics compared."""
    import recbole_lth

    dataset = QUICK_DATASET if args.quick else "ml-100k"
    epochs = 1 if args.quick else 2
    started, results = time.perf_counter(), {}
    for label, device in (("cpu", "cpu"), ("device", args.device)):
        if time.perf_counter() - started > budget and results:
            return [f"skipped: the {label} run (budget {budget:.0f} s spent after the CPU run)"]
        root = Path(tempfile.mkdtemp(prefix=f"gpu-check-{label}-", dir=report.out / "work"))
        settings = {**_study_settings(args, device, root, epochs), "target_sparsities": [0.5],
                    "run_dir": str(root / "run"), "learning_rate": 0.01}  # 2 epochs that learn something
        with contextlib.chdir(root):
            t0 = time.perf_counter()
            result = recbole_lth.run(model="BPR", dataset=dataset, method=["omp", "rp"], config_dict=settings)
        results[label] = (result, time.perf_counter() - t0)
    (cpu, cpu_s), (dev, dev_s) = results["cpu"], results["device"]
    cpu_masks, dev_masks = _stored_masks(cpu.run_dir), _stored_masks(dev.run_dir)
    cpu_rows = {r["ticket"]: r for r in cpu.rows}
    rows = []
    for row in dev.rows:
        key = row["ticket"]
        a, b = cpu_masks.get(key), dev_masks.get(key)
        equal = total = 0
        if a is not None and b is not None:
            for name in a:
                equal += int((a[name] == b[name]).sum())
                total += a[name].numel()
        out = {"ticket": key, "masks_identical": bool(total) and equal == total,
               "mask_agreement": round(equal / total, 6) if total else None}
        for metric in ("test_recall@20", "test_ndcg@20"):
            out[f"cpu {metric}"], out[f"device {metric}"] = cpu_rows[key].get(metric), row.get(metric)
            out[f"|Δ| {metric}"] = round(abs(cpu_rows[key][metric] - row[metric]), 6)
        out["within_noise"] = all(out[f"|Δ| {m}"] <= METRIC_NOISE for m in ("test_recall@20", "test_ndcg@20"))
        rows.append(out)
    report.csv("parity.csv", rows)
    where = "both on the CPU (rehearsal)" if args.device == "cpu" else f"CPU vs {args.device}"
    verdict = "identical" if all(r["masks_identical"] for r in rows) else "DIFFERENT (see mask_agreement)"
    return [f"BPR on {dataset}, {epochs} epoch(s), {where}: wall {cpu_s:.1f} s on the CPU, {dev_s:.1f} s on "
            f"{args.device}. Stored ticket masks: {verdict}. Noise stated: |Δ| ≤ {METRIC_NOISE} on test "
            f"Recall@20 and NDCG@20 (float summation order differs between devices; omp's masks come from "
            f"trained magnitudes, so a tie near the threshold may flip). Raw: parity.csv", ""] + table(rows)


def _measure(name: str, argv: list[str]) -> tuple[object, list, str]:
    """A benchmark's results with ``argv``, in this process: ``(its module, its results, the text its
    main() prints from them)``."""
    module = importlib.import_module(name)  # benchmarks/ is on sys.path
    results = list(module.results(module.parse_args(argv)))
    return module, results, "".join(f"{line}\n" for result in results for line in result.lines())


# The benchmarks' validation cases whose cost over the floor is a figure
VALIDATION_CASES = ("recbole default", "plugin budget", "floor (matmul + topk)")


def cost_rows(script: str, module, results: list) -> list[dict]:
    """The figures of a benchmark's results, as rows; each value rounded as the benchmark prints it."""
    rows = []

    def add(model: str, figure: str, value: float, digits: int) -> None:
        rows.append({"script": script, "model": model, "figure": figure, "value": round(value, digits)})

    for result in results:
        if script == "bench_mask_overhead" and isinstance(result, module.Overhead):
            add(result.model, "masked/dense", result.masked_dense, 3)
            add(result.model, "masked/recbole", result.masked_recbole, 3)
        elif script == "bench_epoch_cost" and isinstance(result, module.EpochCosts):
            for variant, seconds in result.seconds.items():
                add(result.model, f"{variant} s/epoch", seconds, 3)
                add(result.model, f"{variant}/dense", result.per_dense(variant), 3)
            add(result.model, "dsl exploration seconds", result.explore_seconds, 3)
        elif script == "bench_epoch_cost" and isinstance(result, module.Validation):
            for case in (case for case in result.costs if case in VALIDATION_CASES):
                add(result.model, f"validation {case} / floor", result.per_floor(case), 2)
        elif script == "bench_compact" and isinstance(result, module.Evaluations):
            for variant in result.variants:
                add("BPR", f"{variant.name} tables/dense", variant.tables_dense, 4)
                add("BPR", f"{variant.name} eval peak/dense", variant.peak_dense, 3)
    return rows


def _dsl_share(rows: list[dict], timed_epochs: int) -> list[dict]:
    """DSL's exploration seconds over its training seconds (warm-up + timed epochs)."""
    out = []
    for model in {r["model"] for r in rows if r["figure"] == "dsl exploration seconds"}:
        explore = next(r["value"] for r in rows if r["model"] == model and r["figure"] == "dsl exploration seconds")
        epoch = next(r["value"] for r in rows if r["model"] == model and r["figure"] == "dsl s/epoch")
        if epoch:
            out.append({"script": "bench_epoch_cost", "model": model, "figure": "dsl exploration share",
                        "value": round(explore / (epoch * (timed_epochs + 1)), 4)})
    return out


def part_costs(args, report: Report, budget: float) -> list[str]:
    """(c): the existing benchmarks, short, on the device."""
    dataset = QUICK_DATASET if args.quick else args.cost_dataset
    epochs = 1 if args.quick else 2
    common = ["--dataset", dataset, "--data_path", args.data_path, "--gpu_id", args.gpu_id, "--epochs", str(epochs)]
    if args.device != "cpu":
        common.append("--use_gpu")
    steps = [
        ("bench_mask_overhead", common + ["--models", "BPR,LightGCN", "--sparsity", "0.5"]),
        ("bench_epoch_cost", common + ["--models", "BPR", "--sparsity", "0.5"]),
        ("bench_compact", common + ["--sparsities", "0.5,0.9", "--repeats", "1" if args.quick else "2"]),
    ]
    started, rows, lines, text = time.perf_counter(), [], [], []
    for script, argv in steps:
        if time.perf_counter() - started > budget:
            lines.append(f"- skipped: `{script}` (the part's budget, {budget:.0f} s, is spent)")
            continue
        t0 = time.perf_counter()
        with contextlib.chdir(report.out / "work"):
            module, results, printed = _measure(script, argv)
        text.append(f"$ python benchmarks/{script}.py {' '.join(argv)}\n{printed}")
        found = cost_rows(script, module, results)
        rows += found + (_dsl_share(found, epochs) if script == "bench_epoch_cost" else [])
        lines.append(f"- `{script}` on {dataset}: {time.perf_counter() - t0:.1f} s")
    paths.write_text(report.out / "costs.txt", "\n".join(text))
    report.csv("costs.csv", rows)
    wanted = ("masked/dense", "dsl exploration share", "pep/dense", "kd/dense", "dsl/dense",
              "validation plugin budget / floor", "validation recbole default / floor")
    key_rows = [r for r in rows if r["figure"] in wanted or r["figure"].endswith("eval peak/dense")]
    return lines + ["", f"Targets: masked/dense ≤ 1.05 on a GPU. Raw: costs.csv, printed tables: costs.txt", ""] \
        + table(key_rows, ["script", "model", "figure", "value"])


def part_yelp(args, report: Report, budget: float, counter, counter_note: str) -> list[str]:
    """(d) and the rows of (e): one study, wall (and energy) per ticket."""
    import recbole_lth

    dataset = QUICK_DATASET if args.quick else "yelp2018"
    epochs = 1 if args.quick else args.yelp_epochs
    root = Path(tempfile.mkdtemp(prefix="gpu-check-yelp-", dir=report.out / "work"))
    settings = {**_study_settings(args, args.device, root, epochs), "target_sparsities": [0.5],
                "run_dir": str(root / "run"), "stopping_step": epochs, **({} if args.quick else YELP_SPLIT)}
    if args.quick:
        settings["pep_schedule_epochs"] = 0.5  # reach 0.5 within the one tiny epoch
    hooks = [Deadline(time.perf_counter() + budget)]
    if counter is not None:
        hooks.append(EnergyMeter(counter))
    stopped = ""
    t0 = time.perf_counter()
    try:
        with contextlib.chdir(root):
            recbole_lth.run(model="LightGCN", dataset=dataset, method=["dense", "omp", "dsl", "pep"],
                            config_dict=settings, hooks=tuple(hooks))
    except BudgetSpent:
        stopped = f"skipped: the tickets not listed (the part's budget, {budget:.0f} s, was spent)"
    wall = time.perf_counter() - t0
    try:
        rows = read_results(root / "run")
    except FileNotFoundError:
        rows = []
    columns = ["ticket", "method", "sparsity", "epochs_trained", "train_seconds", "search_seconds",
               "test_recall@20", "test_ndcg@20", "energy_joules", "energy_since_last_joules", "note"]
    keep = [{c: r.get(c) for c in columns if c in r} for r in rows]
    report.csv("yelp2018.csv", keep)
    part = [f"LightGCN on {dataset}, {epochs} epoch(s) per ticket (and PEP's search), device {args.device}: "
            f"{len(rows)} rows in {wall:.1f} s. Full Table-3 sizing: multiply train_seconds by "
            f"(epochs of the full run) / {epochs}. Raw: yelp2018.csv", ""]
    part += table(keep, [c for c in columns if c not in ("energy_joules", "energy_since_last_joules")])
    if stopped:
        part += ["", stopped]
    energy = relative_to_dense(rows, "energy_joules") if counter is not None else []
    report.csv("energy.csv", energy)
    report.section("energy", energy_lines(energy, counter_note, rows))
    return part


def energy_lines(energy: list[dict], counter_note: str, rows: list[dict]) -> list[str]:
    if not energy:
        return [f"energy_joules: {counter_note}"]
    return [f"Counter: {counter_note}. energy_joules covers a ticket's training and test evaluation; "
            f"energy_since_last_joules also what ran since the previous ticket (PEP: its search). Raw: energy.csv",
            ""] + table(energy) + ["", "since the previous ticket: " + ", ".join(
                f"{r['ticket']} {r.get('energy_since_last_joules')} J" for r in rows
                if r.get("energy_since_last_joules") is not None)]


def stub_counter(watts: float = 100.0):
    """A counter of ``watts`` × wall seconds (the CPU rehearsal's stand-in for NVML)."""
    start = time.perf_counter()
    return lambda: watts * (time.perf_counter() - start)


def _family_settings(args, root: Path, epochs: int) -> dict:
    """A family study's settings: the parts' common ones, and in the full check
    RecBole's own batch sizes (the families are measured at RecBole's settings)."""
    settings = {**_study_settings(args, args.device, root, epochs), "run_dir": str(root / "run"),
                "stopping_step": epochs}
    if not args.quick:
        del settings["train_batch_size"], settings["eval_batch_size"]
    return settings


def sequential_study(args, root: Path, epochs: int) -> tuple[str, str, list[str], dict, str]:
    """``(model, dataset, methods, settings, what)`` of part (f)'s sequential study."""
    settings = {**_family_settings(args, root, epochs), "target_sparsities": [0.5]}
    if args.quick:
        # RecBole's default load_col keeps user_id and item_id only: None loads the timestamp too.
        # Small layers and few steps: on a busy CPU, SASRec's default layers took 20 s a tiny epoch.
        settings.update(load_col=None, MAX_ITEM_LIST_LENGTH=8, hidden_size=16, inner_size=32, n_layers=1,
                        train_batch_size=128)
        return "SASRec", QUICK_SEQUENCES, ["dense", "omp", "rp"], settings, \
            "tiny synthetic histories; MAX_ITEM_LIST_LENGTH 8, hidden_size 16, 1 layer"
    return "SASRec", "ml-100k", ["dense", "omp", "rp"], settings, \
        "RecBole's defaults: MAX_ITEM_LIST_LENGTH 50, hidden_size 64, 2 layers, 2 heads, loss CE"


def ctr_study(args, root: Path, epochs: int) -> tuple[str, str, list[str], dict, str]:
    """``(model, dataset, methods, settings, what)`` of part (f)'s CTR study."""
    # PEP's ramp (20 epochs by default) must reach 0.8 within its search, whose limit is epochs.
    settings = {**_family_settings(args, root, epochs), "target_sparsities": [0.5, 0.8],
                "pep_schedule_epochs": max(0.5, epochs / 2)}
    methods = ["dense", "omp", "rp", "dsl", "pep"]
    if args.quick:
        settings.update(load_col=None, LABEL_FIELD="label", embedding_size=8, mlp_hidden_size=[16],
                        learning_rate=0.01)  # one tiny epoch that learns something (AUC above chance)
        return "DeepFM", QUICK_LABELED, methods, settings, \
            "tiny synthetic 0/1 labels, embedding_size 8, one hidden layer of 16"
    settings["embedding_size"] = 64  # the PEP paper's
    return "DeepFM", "ml-100k", methods, settings, \
        "RecBole's CTR setting of ml-100k (label: rating ≥ 4, user and item features), embedding_size 64"


FAMILY_COLUMNS = {  # model -> the columns of its table
    "SASRec": ["ticket", "method", "sparsity", "epochs_trained", "train_seconds", "seconds/epoch",
               "test_recall@20", "test_ndcg@20", "note"],
    "DeepFM": ["ticket", "method", "sparsity", "epochs_trained", "train_seconds", "seconds/epoch",
               "search_seconds", "test_auc", "test_logloss", "note"],
}


def _family_rows(run_dir: Path) -> list[dict]:
    """A study's rows with ``seconds/epoch`` (train_seconds counts each epoch's validation too)."""
    try:
        rows = read_results(run_dir)
    except FileNotFoundError:
        return []
    for row in rows:
        trained = row.get("epochs_trained")
        row["seconds/epoch"] = round(row["train_seconds"] / trained, 3) if trained else None
    return rows


def run_family(study, device: str, deadline: float, budget_note: str) -> tuple[list[dict], list[str]]:
    """One study of part (f) until ``deadline``: its rows and its Markdown lines."""
    import recbole_lth

    model, dataset, methods, settings, what = study
    epochs, targets = settings["epochs"], settings["target_sparsities"]
    stopped = ""
    t0 = time.perf_counter()
    try:
        with contextlib.chdir(Path(settings["output_root"])):
            recbole_lth.run(model=model, dataset=dataset, method=methods, config_dict=settings,
                            hooks=(Deadline(deadline),))
    except BudgetSpent:
        stopped = f"skipped: the tickets not listed ({budget_note} was spent)"
    except Exception as err:  # a broken family must not cost the other its figures
        import traceback

        stopped = "\n".join([f"failed: {type(err).__name__}: {err}", "", "```", traceback.format_exc()[-3000:],
                             "```"])
    wall = time.perf_counter() - t0
    rows = _family_rows(Path(settings["run_dir"]))
    dense = [r["seconds/epoch"] for r in rows if r["ticket"] == paths.DENSE_TICKET and r["seconds/epoch"]]
    sparse = [r["seconds/epoch"] for r in rows if r["ticket"] != paths.DENSE_TICKET and r["seconds/epoch"]]
    per_epoch = "; ".join(f"{name} {_span(values)}" for name, values in (("dense", dense), ("the others", sparse))
                          if values)
    lines = [f"{model} on {dataset} ({what}); {', '.join(methods)} at {', '.join(map(str, targets))}; "
             f"{epochs} epoch(s) per ticket, device {device}: {len(rows)} rows in {wall:.1f} s. "
             f"Seconds per epoch (validation included): {per_epoch or 'none measured'}.", ""]
    lines += table(rows, FAMILY_COLUMNS[model])
    return rows, lines + (["", stopped] if stopped else [])


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.2f}" if high == low else f"{low:.2f}–{high:.2f}"


def anomaly_detection() -> str:
    """Whether torch's anomaly detection is on: RecBole's sine.py switches it on at import
    (recbole_lth.compat patch 8 switches it back off), and the studies would then time the debugger."""
    import recbole.model.sequential_recommender  # noqa: F401

    return "ON (the studies time torch's debugger)" if torch.is_anomaly_enabled() else "off"


def part_families(args, report: Report, budget: float) -> list[str]:
    """(f): a sequential and a CTR study, each with its share of the part's budget."""
    epochs = 1 if args.quick else args.family_epochs
    anomaly = anomaly_detection()
    started = time.perf_counter()
    rows, lines = [], []
    for study, share in ((sequential_study, SEQUENTIAL_SHARE), (ctr_study, 1.0)):
        root = Path(tempfile.mkdtemp(prefix=f"gpu-check-{study.__name__}-", dir=report.out / "work"))
        seconds = share * budget
        found, text = run_family(study(args, root, epochs), args.device, started + seconds,
                                 f"{'the part' if share == 1.0 else 'its share of the part'}'s budget, {seconds:.0f} s")
        rows += found
        lines += text + [""]
        report.csv("families.csv", rows)  # after each study, so a stopped run keeps the first
    return ["Raw: families.csv (wall per ticket: train_seconds; seconds/epoch = train_seconds / epochs_trained). "
            f"torch's anomaly detection: {anomaly}.", ""] + lines[:-1]


# ------------------------------------------------------------------ data, main
def write_quick_data(data_path: Path) -> None:
    """Tiny RecBole datasets, 60-80 users in two taste groups over 40 items:
    interactions; time-ordered histories (a user walks its group's items in
    order, so the next item is learnable); 0/1 labels (1 mostly within the group)."""
    rng = random.Random(1)
    lines = ["user_id:token\titem_id:token"]
    for user in range(60):
        half = 20 * (user % 2)
        lines += [f"u{user}\ti{half + item}" for item in sorted(rng.sample(range(20), 12))]
    _write_inter(data_path, QUICK_DATASET, lines)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(60):
        half, start = 20 * (user % 2), rng.randrange(20)
        lines += [f"u{user}\ti{half + (start + t) % 20}\t{1000 * user + t}" for t in range(12)]
    _write_inter(data_path, QUICK_SEQUENCES, lines)
    lines = ["user_id:token\titem_id:token\tslot:token\tlabel:float"]
    for user in range(80):
        for item in rng.sample(range(40), 15):
            liked = (user % 2 == item % 2) != (rng.random() < 0.1)  # 10% of labels flipped
            lines.append(f"u{user}\ti{item}\ts{rng.randrange(4)}\t{int(liked)}")
    _write_inter(data_path, QUICK_LABELED, lines)


def _write_inter(data_path: Path, dataset: str, lines: list[str]) -> None:
    folder = data_path / dataset
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{dataset}.inter").write_text("\n".join(lines) + "\n")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_check.md and the CSVs")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--gpu_id", default="0")
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 epoch: the CPU rehearsal (< 1 min)")
    parser.add_argument("--budget_s", type=float, default=480, help="wall seconds for the whole check")
    parser.add_argument("--data_path", default=None,
                        help="folder holding yelp2018/ (default: ../shared/datasets; --quick: OUT/data)")
    parser.add_argument("--cost_dataset", default="yelp2018", help="dataset of part (c)")
    parser.add_argument("--yelp_epochs", type=int, default=3, help="epochs per ticket in part (d)")
    parser.add_argument("--family_epochs", type=int, default=3, help="epochs per ticket in part (f)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    for name, (_, seconds) in PARTS.items():
        parser.add_argument(f"--budget_{name}", type=float, default=seconds, help=f"seconds for part {name}")
    return parser.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    (out / "work").mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.data_path = args.data_path or str(out / "data")
        write_quick_data(Path(args.data_path))
    args.data_path = str(Path(args.data_path or REPO.parent / "shared" / "datasets").resolve())
    begun = time.perf_counter()
    deadline = begun + args.budget_s
    report = Report(out, args)
    cuda = torch.cuda.is_available()
    report.header = [
        f"device {args.device}" + (f" ({torch.cuda.get_device_name(0)})" if cuda and args.device == "cuda" else "")
        + f"; torch {torch.__version__}; Python {platform.python_version()}; "
        f"{'quick rehearsal (tiny data, 1 epoch)' if args.quick else 'full check'}; budget {args.budget_s:.0f} s; "
        f"data {args.data_path}",
    ]
    wanted = set(args.parts.split(","))
    no_device = args.device == "cuda" and not cuda
    counter, counter_note = (None, "skipped: no CUDA") if no_device else nvml_counter(args.device)
    if counter is None and args.quick:
        counter, counter_note = stub_counter(), \
            f"a stub counter (100 W × wall seconds), not a measurement: {counter_note}"
    report.write()
    for name in PARTS:
        if name == "energy":
            if "yelp" not in wanted or no_device:
                report.section(name, [f"energy_joules: {counter_note}" if no_device else
                                      "skipped: part yelp was not run (energy is measured on its tickets)"])
            continue
        if name not in wanted:
            report.section(name, ["skipped: not asked for (--parts)"])
            continue
        if no_device:
            report.section(name, ["skipped: no CUDA"])
            continue
        budget = min(getattr(args, f"budget_{name}"), deadline - time.perf_counter())
        if budget <= 1:
            report.section(name, [f"skipped: the check's budget ({args.budget_s:g} s) is spent"])
            if name == "yelp":
                report.section("energy", [f"skipped: the check's budget ({args.budget_s:g} s) was spent before "
                                          f"part yelp, whose tickets it measures"])
            continue
        t0 = time.perf_counter()
        try:
            if name == "tests":
                lines = part_tests(args, report, budget)
            elif name == "parity":
                lines = part_parity(args, report, budget)
            elif name == "costs":
                lines = part_costs(args, report, budget)
            elif name == "yelp":
                lines = part_yelp(args, report, budget, counter, counter_note)
            else:
                lines = part_families(args, report, budget)
        except Exception as err:  # a broken part must not cost the others their figures
            import traceback

            lines = [f"failed: {type(err).__name__}: {err}", "", "```", traceback.format_exc()[-3000:], "```"]
        report.section(name, lines + ["", f"(part took {time.perf_counter() - t0:.1f} s of its {budget:.0f} s)"])
    report.header.append(f"total wall {time.perf_counter() - begun:.1f} s")
    report.write()
    print(f"wrote {out / 'gpu_check.md'}")
    return out / "gpu_check.md"


if __name__ == "__main__":
    main()
