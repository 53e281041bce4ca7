"""What a person follows while a search runs: one line per finished ticket, a
ticket-level progress bar (i of N, elapsed, remaining), and the per-ticket
scalars in TensorBoard (``tensorboard/tickets`` in the run directory)."""
from __future__ import annotations

import logging

from recbole_lth.core import paths

logger = logging.getLogger("recbole_lth")


class Progress:
    """One bar and one line per ticket for a whole command (every seed's run).

    ``for_run(run_paths, label)`` is what a run calls with each new row
    (``Run.on_row``); a parallel run's driver also reports the tickets its
    workers finish (``record``), and a row already reported is not reported
    again when the driver's own pass reaches it."""

    def __init__(self, total: int, metric: str, enabled: bool = True):
        from tqdm import tqdm

        self.total, self.metric, self.enabled = total, metric.lower(), enabled
        self.done = 0
        self.bar = tqdm(total=total, desc="tickets", unit="ticket", dynamic_ncols=True, disable=not enabled)
        self.writers: dict = {}
        self.seen: set = set()

    def for_run(self, run_paths: paths.RunPaths, label: str = ""):
        return lambda row, trained: self.record(run_paths, label, row, trained)

    def line(self, row: dict, trained: bool, label: str = "") -> str:
        head = f"[{self.done}/{self.total}] {label + ' ' if label else ''}{row.get('ticket')} ({row.get('method')})"
        if row.get(f"test_{self.metric}") is None:
            return f"{head}: {row.get('note') or 'no ticket'}"
        seconds = row.get("train_seconds")
        cost = f"{row.get('epochs_trained')} epochs, {seconds:.0f} s" if trained and seconds is not None else \
            "already finished"
        return (f"{head}: sparsity {row.get('sparsity', 0):.4f}, valid {self.metric} "
                f"{row.get(f'valid_{self.metric}', float('nan')):.4f}, test {row.get(f'test_{self.metric}'):.4f}, "
                f"best epoch {row.get('best_epoch')} ({cost})")

    def record(self, run_paths: paths.RunPaths, label: str, row: dict, trained: bool) -> None:
        seen = (str(run_paths.root), row.get("ticket"))
        if seen in self.seen:
            return
        self.seen.add(seen)
        self.done += 1
        text = self.line(row, trained, label)
        if self.enabled:
            self.bar.write(text)
            self.bar.update(1)
        logger.info(text)
        self._scalars(run_paths, row)

    def _scalars(self, run_paths: paths.RunPaths, row: dict) -> None:
        if row.get("sparsity") is None:
            return
        writer = self.writers.get(run_paths.root)
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter

            writer = self.writers[run_paths.root] = SummaryWriter(str(run_paths.tensorboard / "tickets"))
        step = sum(1 for root, _ in self.seen if root == str(run_paths.root))
        writer.add_scalar("ticket/sparsity", row["sparsity"], step)
        writer.add_scalar("ticket/active_params", row.get("active_params") or 0, step)
        if row.get(f"valid_{self.metric}") is not None:
            writer.add_scalar(f"ticket/valid_{self.metric}", row[f"valid_{self.metric}"], step)
        writer.add_text("ticket/name", f"{row.get('ticket')} ({row.get('method')})", step)

    def close(self) -> None:
        self.bar.close()
        for writer in self.writers.values():
            writer.close()
