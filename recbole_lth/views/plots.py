"""The report's pictures: metric vs sparsity, metric vs non-zero weights, kept dimensions vs popularity."""
from __future__ import annotations

from pathlib import Path

from recbole_lth.views.judge import metric_label


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt, fig, axes, title: str, path) -> Path:
    """Grid and legend on every panel, a title, and a PNG written to ``path``."""
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_curves(path, series: list[tuple], baselines: list[tuple], metrics: list[str], title: str) -> Path:
    """Test metric vs sparsity: ``series`` = [(label, rows)], ``baselines`` = [(label, row)]
    drawn as horizontal dashed lines; one panel per metric."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.2 * len(metrics), 4.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 8)
        for label, rows in series:
            points = sorted(
                (r["sparsity"], r[metric]) for r in rows
                if isinstance(r.get("sparsity"), (int, float)) and isinstance(r.get(metric), (int, float))
            )
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=label, color=next(colors))
        for i, (label, row) in enumerate(baselines):
            if isinstance(row.get(metric), (int, float)):
                ax.axhline(row[metric], linestyle="--", color=("0.35", "0.6", "0.15", "0.75")[i % 4],
                           linewidth=1.2, label=label)
        ax.set_xlabel("sparsity of the prunable tables (fraction of weights pruned)")
        ax.set_ylabel(metric_label(metric))
        ax.set_xlim(left=min(0.0, ax.get_xlim()[0]))
    return _save_figure(plt, fig, axes, title, path)


def plot_embedding_sizes(path, records: list[dict], title: str) -> Path:
    plt = _pyplot()
    # user, item, or a CTR table's fields, one panel each
    sides = list(dict.fromkeys(r["side"] for r in records)) or ["item"]
    fig, axes = plt.subplots(1, len(sides), figsize=(6.2 * len(sides), 4.4), squeeze=False)
    for ax, side in zip(axes[0], sides):
        for name in dict.fromkeys(r["tensor"] for r in records if r["side"] == side):
            mine = [r for r in records if r["tensor"] == name and r["side"] == side]
            ax.plot([r["bucket"] for r in mine], [r["kept_fraction"] for r in mine], marker="o",
                    label=f"{name} (width {mine[0]['width']})")
        ax.set_xticks(sorted({r["bucket"] for r in records if r["side"] == side}))
        ax.set_xlabel(f"{side} popularity bucket (1 = fewest training interactions)")
        ax.set_ylabel("mean fraction of dimensions kept")
        ax.set_ylim(0, 1.05)
    return _save_figure(plt, fig, axes, title, path)


def plot_mean_bands(path, series: list[tuple], bands: list[tuple], metric: str, title: str) -> Path:
    """Mean over seeds vs target sparsity with a shaded ± std band: ``series`` =
    [(label, [(target, mean, std)])], ``bands`` = [(label, mean, std)] drawn as
    horizontal lines with their band (the dense reference); a None std draws
    no band (one seed)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 1, figsize=(6.8, 4.6), squeeze=False)
    ax = axes[0][0]
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 8)
    for label, points in series:
        xs, means, stds = zip(*points)
        spreads = [s or 0.0 for s in stds]
        color = next(colors)
        ax.plot(xs, means, marker="o", label=label, color=color)
        ax.fill_between(xs, [m - s for m, s in zip(means, spreads)], [m + s for m, s in zip(means, spreads)],
                        color=color, alpha=0.2)
    for i, (label, mean, std) in enumerate(bands):
        gray = ("0.35", "0.6")[i % 2]
        ax.axhline(mean, linestyle="--", color=gray, linewidth=1.2, label=label)
        if std:
            ax.axhspan(mean - std, mean + std, color=gray, alpha=0.15)
    ax.set_xlabel("target sparsity of the prunable tables")
    ax.set_ylabel(metric_label(metric))
    ax.set_xlim(left=min(0.0, ax.get_xlim()[0]))
    return _save_figure(plt, fig, axes, title, path)


# One colour per method in every frontier figure, whichever methods a study ran (the rest take what is left).
_METHOD_ORDER = ("omp", "rp", "pep", "small_dense", "imp", "dsl", "snip", "gmp", "eb", "wr", "lcm")


def _method_colors(plt, labels: list[str]) -> list[str]:
    """A known method's colour is its place in ``_METHOD_ORDER``; a label "method [variant]" takes its method's."""
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    methods = [label.split(" [")[0] for label in labels]
    taken = {palette[_METHOD_ORDER.index(m) % len(palette)] for m in methods if m in _METHOD_ORDER}
    spare = iter([c for c in palette if c not in taken] * len(labels) or palette * len(labels))
    return [palette[_METHOD_ORDER.index(m) % len(palette)] if m in _METHOD_ORDER else next(spare) for m in methods]


def plot_frontier(path, panels: list[tuple], title: str) -> Path:
    """The metric against the non-zero weights on a log axis, one panel per metric:
    ``panels`` = [(metric, lines, references, points)] with lines = [(label, [(weights,
    mean, low, high)])] drawn with their intervals as error bars, references = [(label,
    weights or None, mean, low, high)] as a dashed horizontal line with its band (and a
    marker where it has weights), points = [(label, weights, value)] as lone markers (a
    paper's figures).  Lines at the same weights are dodged sideways by a few percent."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.6), squeeze=False)
    for ax, (metric, lines, references, points) in zip(axes[0], panels):
        colors = _method_colors(plt, [label for label, _ in lines] + [label for label, *_ in points])
        for i, (label, drawn) in enumerate(lines):
            xs, means, lows, highs = zip(*drawn)
            # Methods share their weights (exact-count pruning): dodge each line a few percent so no
            # interval hides another's.
            xs = [x * 1.04 ** (i - (len(lines) - 1) / 2) for x in xs]
            ax.errorbar(xs, means, yerr=[[m - lo for m, lo in zip(means, lows)], [h - m for m, h in zip(means, highs)]],
                        marker="o", capsize=3, label=label, color=colors[i])
        for i, (label, weights, mean, low, high) in enumerate(references):
            gray = ("0.3", "0.55", "0.75")[i % 3]
            ax.axhline(mean, linestyle="--", color=gray, linewidth=1.2, label=label)
            if high > low:
                ax.axhspan(low, high, color=gray, alpha=0.15)
            if weights:
                ax.plot([weights], [mean], marker="s", color=gray)
        for j, (label, weights, value) in enumerate(points):
            ax.plot([weights], [value], marker="*", markersize=11, linestyle="none", label=label,
                    color=colors[len(lines) + j])
        ax.set_xscale("log")
        ax.set_xlabel("non-zero weights of the prunable tables (log scale)")
        ax.set_ylabel(metric_label(metric))
    return _save_figure(plt, fig, axes, title, path)
