"""Statistics over seeds: ``summary.csv``, ``summary.md``, ``summary.tex``, ``curve.png``, ``frontier.png``.

A study runs the same settings once per seed; each seed is an ordinary run
directory.  This module only reads their rows and writes views of them.

* Each ticket's Δ is **paired**: the ticket minus the dense reference of the
  *same seed* (:func:`judge.dense_reference`), so the seed-to-seed variation
  the two share cancels.  A seed pairs only when both rows have the metric.
* The 95% CI of the mean Δ is mean ± t_{0.975, n-1}·sd/√n and the p value
  is the paired t test (``scipy.stats.ttest_rel``): with a handful of seeds
  the intervals are wide, and the verdict says "tie" rather than guess.
* The verdict is on :func:`judge.verdict_metric`: winning when the CI lies at
  or above 0 (the LTH-MRS a' >= a, over seeds), losing when it lies below 0;
  reversed for a metric where lower is better (LogLoss: the task protocol).
"""
from __future__ import annotations

import math
from pathlib import Path
from statistics import fmean, stdev

from scipy import stats

from recbole_lth.core import paths, tasks
from recbole_lth.core.settings import is_number
from recbole_lth.engine.results import columns_of
from recbole_lth.views.judge import dense_reference, is_empty, is_zero, metric_label, verdict_metric
from recbole_lth.views.markdown import fmt, md_table, pct
from recbole_lth.views.plots import plot_frontier, plot_mean_bands

CONFIDENCE = 0.95
# The per-metric statistics of a summary row, in column order (``<m>_<stat>``).
METRIC_STATS = ("mean", "std", "delta", "rel_delta", "ci_low", "ci_high", "p")
VERDICT_TEXT = (
    "**winning** when the 95% CI of the mean paired Δ lies at or above 0, **losing** when it lies below 0, "
    "**tie** when it contains 0 (for a metric where lower is better, such as LogLoss, winning and losing swap "
    "sides)"
)


# ------------------------------------------------------------------ inputs
def test_metrics(seed_rows: dict[int, list[dict]]) -> list[str]:
    """Every ``test_*`` column over the seeds, in first-seen order."""
    return [c for c in columns_of([r for rows in seed_rows.values() for r in rows]) if c.startswith("test_")]


def rows_by_ticket(seed_rows: dict[int, list[dict]]) -> dict[str, dict[int, dict]]:
    """ticket -> {seed: its row}, tickets in first-seen order over the seeds
    in their given order (a ticket's first row in a seed wins)."""
    found: dict[str, dict[int, dict]] = {}
    for seed, rows in seed_rows.items():
        for row in rows:
            found.setdefault(row.get("ticket"), {}).setdefault(seed, row)
    return found


# -------------------------------------------------------------- statistics
def spread(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof=1; None below two values)."""
    if not values:
        return None, None
    return fmean(values), (stdev(values) if len(values) >= 2 else None)


def paired_difference(pairs: list[tuple[float, float]]) -> dict:
    """Mean Δ (value − reference) over the pairs, relative Δ, 95% CI and paired p.

    Identical Δs have sd 0: the CI is the point [Δ, Δ] and the t test is
    undefined (no p)."""
    out = dict.fromkeys(("delta", "rel_delta", "ci_low", "ci_high", "p"))
    if not pairs:
        return out
    values, references = zip(*pairs)
    deltas = [v - r for v, r in pairs]
    mean, reference = fmean(deltas), fmean(references)
    out["delta"] = mean
    out["rel_delta"] = mean / reference if reference else None
    if len(deltas) < 2:
        return out
    sd = stdev(deltas)
    out["ci_low"], out["ci_high"] = mean_interval(mean, sd, len(deltas))
    if not is_zero(sd):
        p = float(stats.ttest_rel(values, references).pvalue)
        out["p"] = p if math.isfinite(p) else None
    return out


def mean_interval(mean: float | None, std: float | None, n: int) -> tuple[float, float] | None:
    """The 95% t interval of a mean over ``n`` seeds (None below two seeds)."""
    if mean is None or std is None or n < 2:
        return None
    half = 0.0 if is_zero(std) else float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def verdict_of(ci_low, ci_high, metric=None) -> str:
    """On Δ = ticket − dense: at or above 0 wins, below 0 loses; for a metric
    where lower is better (LogLoss, RMSE, MAE) the other way round."""
    if tasks.lower_is_better(metric):
        ci_low, ci_high = -ci_high, -ci_low
    if ci_low >= 0:
        return "winning"
    return "losing" if ci_high < 0 else "tie"


# ---------------------------------------------------------------- summary
def seed_pairs(metric: str, by_seed: dict[int, dict], dense: dict[int, dict | None]) -> list[tuple[float, float]]:
    """(ticket, same seed's dense) values of the seeds where both have ``metric``."""
    return [(row[metric], dense[seed][metric]) for seed, row in by_seed.items()
            if dense.get(seed) is not None and is_number(row.get(metric)) and is_number(dense[seed].get(metric))]


def _metric_columns(metric: str, by_seed: dict[int, dict], dense: dict, reference: bool) -> dict:
    mean, std = spread([row[metric] for row in by_seed.values() if is_number(row.get(metric))])
    # The reference paired with itself would be a Δ of 0 that says nothing.
    found = {"mean": mean, "std": std, **paired_difference([] if reference else seed_pairs(metric, by_seed, dense))}
    return {f"{metric}_{stat}": found[stat] for stat in METRIC_STATS}


def _verdict(out: dict, by_seed: dict[int, dict], reference: bool, has_dense: bool) -> str:
    if reference:
        return "reference"
    if any(is_empty(row) for row in by_seed.values()):
        return "empty"
    if out["n"] == 0:
        return "no metric"
    if not has_dense:
        return "no dense"
    if out["n_paired"] < 2:
        return "one seed"
    metric = out["verdict_metric"]
    return verdict_of(out[f"{metric}_ci_low"], out[f"{metric}_ci_high"], metric)


def summarize(seed_rows: dict[int, list[dict]], valid_metric: str | None) -> list[dict]:
    """One row per ticket over the seeds (``seed_rows``: seed -> its run's rows).

    Columns: method, ticket, target_sparsity, n (seeds with the verdict
    metric), n_paired (of those, seeds whose dense row has it too),
    sparsity_mean, nonzero_mean (the prunable tables' non-zero weights),
    ``<m>_<stat>`` for every test metric and
    :data:`METRIC_STATS`, verdict_metric and verdict."""
    metrics = test_metrics(seed_rows)
    metric = verdict_metric(metrics, valid_metric)
    dense = {seed: dense_reference(rows) for seed, rows in seed_rows.items()}
    has_dense = metric is not None and any(d is not None and is_number(d.get(metric)) for d in dense.values())
    summary = []
    for ticket, by_seed in rows_by_ticket(seed_rows).items():
        first = next(iter(by_seed.values()))
        reference = any(row is dense[seed] for seed, row in by_seed.items())
        out = {
            "method": first.get("method"), "ticket": ticket, "target_sparsity": first.get("target_sparsity"),
            "n": sum(is_number(row.get(metric)) for row in by_seed.values()) if metric else 0,
            "n_paired": 0,
            "sparsity_mean": spread([r["sparsity"] for r in by_seed.values() if is_number(r.get("sparsity"))])[0],
            "nonzero_mean": spread([r["nonzero_params"] for r in by_seed.values()
                                    if is_number(r.get("nonzero_params"))])[0],
        }
        for column in metrics:
            out.update(_metric_columns(column, by_seed, dense, reference))
        if metric and not reference:
            out["n_paired"] = len(seed_pairs(metric, by_seed, dense))
        out["verdict_metric"] = metric
        out["verdict"] = _verdict(out, by_seed, reference, has_dense)
        summary.append(out)
    return summary


# --------------------------------------------------------------- markdown
def mean_std(row: dict, metric: str) -> str:
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if mean is None:
        return ""
    return fmt(mean) if std is None else f"{fmt(mean)} ± {fmt(std)}"


def _interval(row: dict, metric: str) -> str:
    low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    return "" if low is None else f"[{fmt(low)}, {fmt(high)}]"


def verdict_table(rows: list[dict]) -> str:
    """The verdict metric's table: mean ± std, paired Δ, CI, p, verdict."""
    metric = rows[0]["verdict_metric"] if rows else None
    if metric is None:
        return "No test metric in the results: no statistics."
    return md_table(
        ["method", "ticket", "target", "n", f"{metric.removeprefix('test_')} mean ± std", "Δ", "relative Δ",
         "95% CI of Δ", "p", "verdict"],
        [[r["method"], r["ticket"], r["target_sparsity"], r["n"], mean_std(r, metric), r.get(f"{metric}_delta"),
          pct(r.get(f"{metric}_rel_delta")), _interval(r, metric), r.get(f"{metric}_p"), r["verdict"]]
         for r in rows],
    )


def degenerate_tickets(rows: list[dict]) -> list[str]:
    """Tickets whose Δ is the same in every paired seed (a point CI, no p)."""
    metric = rows[0]["verdict_metric"] if rows else None
    return [r["ticket"] for r in rows if metric and r.get(f"{metric}_ci_low") is not None
            and r[f"{metric}_ci_low"] == r[f"{metric}_ci_high"]]


def summary_markdown(rows: list[dict], seeds: list[int], title: str) -> str:
    metric = rows[0]["verdict_metric"] if rows else None
    metrics = [c.removesuffix("_mean") for c in columns_of(rows) if c.startswith("test_") and c.endswith("_mean")]
    lines = [
        f"# {title}", "",
        f"Seeds: {', '.join(map(str, seeds))} (one run directory each). Mean ± sample std over the seeds; "
        "Δ = the ticket minus the dense reference of the same seed, averaged over the seeds where both have "
        "the metric; relative Δ = mean Δ / mean of those dense values. "
        f"Paired t test (scipy.stats.ttest_rel), n = {len(seeds)} seeds: small n, wide intervals.", "",
        f"Verdict on {metric_label(metric) if metric else 'no test metric'}: {VERDICT_TEXT}; \"one seed\" when "
        "fewer than two seeds pair with a dense reference, \"no dense\" when no seed has one, \"empty\" when the "
        "ticket keeps no weight in some seed, \"no metric\" when no seed has the metric.", "",
    ]
    degenerate = degenerate_tickets(rows)
    if degenerate:
        lines += [f"Δ identical in every seed (sd 0) for {', '.join(f'`{t}`' for t in degenerate)}: the CI is "
                  "the point [Δ, Δ] and the t test is undefined (no p).", ""]
    lines += [verdict_table(rows), "", "## Every test metric (mean ± std over the seeds)", ""]
    lines += [md_table(["method", "ticket", "target", *[m.removeprefix("test_") for m in metrics]],
                       [[r["method"], r["ticket"], r["target_sparsity"], *[mean_std(r, m) for m in metrics]]
                        for r in rows]), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ LaTeX
def _tex(text) -> str:
    return str(text).replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")


def method_grid(rows: list[dict]) -> tuple[dict | None, dict[str, dict[float, dict]]]:
    """The dense reference row and {method: {target sparsity: row}} of the
    other methods (dense_weight_decays candidates are not a method's curve)."""
    reference = next((r for r in rows if r["verdict"] == "reference"), None)
    grid: dict[str, dict[float, dict]] = {}
    for row in rows:
        if row is reference or paths.is_dense_candidate(row["ticket"]) or not is_number(row.get("target_sparsity")):
            continue
        grid.setdefault(row["method"], {}).setdefault(row["target_sparsity"], row)
    return reference, grid


def _ranked_cell(row: dict | None, metric: str, column: list[float]) -> str:
    """``mean$\\pm$std`` (4 decimals), bold the column's best, underline its second."""
    mean = (row or {}).get(f"{metric}_mean")
    if mean is None:
        return "--"
    std = row.get(f"{metric}_std")
    cell = f"{mean:.4f}" + ("" if std is None else rf"$\pm${std:.4f}")
    # Ranked on the printed values, so two cells that print alike rank alike.
    distinct = sorted(set(column), reverse=True)
    if round(mean, 4) == distinct[0]:
        return rf"\textbf{{{cell}}}"
    return rf"\underline{{{cell}}}" if len(distinct) > 1 and round(mean, 4) == distinct[1] else cell


def summary_latex(rows: list[dict], seeds: list[int]) -> str:
    """A booktabs table: methods (dense first) x target sparsities of the verdict metric."""
    metric = rows[0]["verdict_metric"] if rows else None
    if metric is None:
        return "% no test metric in the results\n"
    reference, grid = method_grid(rows)
    targets = sorted({t for cells in grid.values() for t in cells})
    table = ([(reference["method"], {t: reference for t in targets})] if reference else []) + list(grid.items())
    columns = {t: [round(cells[t][f"{metric}_mean"], 4) for _, cells in table
                   if t in cells and cells[t].get(f"{metric}_mean") is not None] for t in targets}
    lines = [
        r"\begin{table}[t]", r"\centering",
        rf"\caption{{{_tex(metric_label(metric))} (mean$\pm$std over seeds {', '.join(map(str, seeds))}) by "
        r"target sparsity; best of each column in bold, second underlined; dense is the shared reference.}",
        rf"\begin{{tabular}}{{l{'c' * len(targets)}}}", r"\toprule",
        " & ".join(["Method", *(f"{t:g}" for t in targets)]) + r" \\", r"\midrule",
    ]
    lines += [" & ".join([_tex(method), *(_ranked_cell(cells.get(t), metric, columns[t]) for t in targets)])
              + r" \\" for method, cells in table]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ curve
def _seeds_label(name: str, rows: list[dict]) -> str:
    counts = sorted({r["n"] for r in rows})
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"{name} (mean ± std over {n} seed{'' if n == '1' else 's'})"


def write_curve(path, rows: list[dict], title: str) -> Path | None:
    metric = rows[0]["verdict_metric"] if rows else None
    if metric is None:
        return None
    reference, grid = method_grid(rows)
    series = []
    for method, cells in grid.items():
        drawn = [cells[t] for t in sorted(cells) if cells[t].get(f"{metric}_mean") is not None]
        if drawn:
            series.append((_seeds_label(method, drawn),
                           [(r["target_sparsity"], r[f"{metric}_mean"], r[f"{metric}_std"]) for r in drawn]))
    bands = [(_seeds_label(str(reference["ticket"]), [reference]), reference[f"{metric}_mean"],
              reference[f"{metric}_std"])] if reference and reference.get(f"{metric}_mean") is not None else []
    return plot_mean_bands(path, series, bands, metric, title)


def frontier_points(rows: list[dict], metric: str) -> tuple[list[tuple], tuple | None]:
    """The metric against non-zero weights: ([(method, [(weights, mean, low, high)])], the
    reference's (label, weights, mean, low, high)), each point's interval its mean's 95% t
    interval over the seeds (low = high = mean below two seeds).  Empty tickets are left out:
    a log axis has no 0, and their metric says nothing about the method."""
    def point(row):
        mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
        low, high = mean_interval(mean, std, row.get("n") or 0) or (mean, mean)
        return row["nonzero_mean"], mean, low, high

    drawable = [r for r in rows if is_number(r.get("nonzero_mean")) and r["nonzero_mean"] > 0
                and is_number(r.get(f"{metric}_mean")) and not paths.is_dense_candidate(r["ticket"])]
    reference = next((r for r in drawable if r["verdict"] == "reference"), None)
    series: dict[str, list[tuple]] = {}
    for row in drawable:
        if row is not reference:
            series.setdefault(row["method"], []).append(point(row))
    lines = [(method, sorted(points)) for method, points in series.items()]
    return lines, ((reference["ticket"], *point(reference)) if reference else None)


def frontier_metrics(rows: list[dict]) -> list[str]:
    """The verdict metric, and a labeled task's other test metrics (LogLoss beside AUC);
    full sort's @K siblings are not drawn."""
    metric = rows[0]["verdict_metric"] if rows else None
    if metric is None:
        return []
    tested = [c.removesuffix("_mean") for c in columns_of(rows) if c.startswith("test_") and c.endswith("_mean")]
    return [metric] + [c for c in tested if "@" not in c + metric and c != metric]


def write_frontier(path, rows: list[dict], title: str) -> Path | None:
    """Every test metric against the non-zero weights (a log axis): the PEP paper's figure."""
    panels = [(metric, *frontier_points(rows, metric)) for metric in frontier_metrics(rows)]
    if not any(lines for _, lines, _ in panels):
        return None
    return plot_frontier(path, [(m, lines, [reference] if reference else [], []) for m, lines, reference in panels],
                         title)


def write_summary(study_root, seed_rows: dict[int, list[dict]], valid_metric: str | None, title: str) -> Path:
    """Write the study's summary files; returns the path of ``summary.md``."""
    study = paths.StudyPaths(study_root)
    rows = summarize(seed_rows, valid_metric)
    seeds = list(seed_rows)
    paths.write_csv(study.summary_csv, rows)
    paths.write_text(study.summary_tex, summary_latex(rows, seeds))
    write_curve(study.curve, rows, f"{title}: test metric vs target sparsity")
    frontier = write_frontier(study.frontier, rows, f"{title}: test metric vs non-zero weights")
    markdown = summary_markdown(rows, seeds, title)
    if rows and rows[0]["verdict_metric"]:
        markdown += f"\n![mean ± std vs target sparsity]({study.curve.name})\n"
    if frontier:
        markdown += f"\n![mean and its 95% interval vs non-zero weights]({study.frontier.name})\n"
    return paths.write_text(study.summary_md, markdown)
