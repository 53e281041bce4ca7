"""What a person follows while a search runs: one line per finished ticket, a
ticket-level progress bar (i of N, elapsed, remaining), and the per-ticket
scalars in TensorBoard (``tensorboard/tickets`` in the run directory)."""
from __future__ import annotations

import logging

from recbole_lth import paths

logger = logging.getLogger("recbole_lth")


class Progress:
    """Called by the run with every new results row (``Run.on_row``)."""

    def __init__(self, total: int, run_paths: paths.RunPaths, metric: str, enabled: bool = True):
        from tqdm import tqdm

        self.total, self.metric, self.enabled = total, metric.lower(), enabled
        self.done = 0
        self.bar = tqdm(total=total, desc="tickets", unit="ticket", dynamic_ncols=True, disable=not enabled)
        self.run_paths = run_paths
        self.writer = None

    def line(self, row: dict, trained: bool) -> str:
        head = f"[{self.done}/{self.total}] {row.get('ticket')} ({row.get('method')})"
        if row.get(f"test_{self.metric}") is None:
            return f"{head}: {row.get('note') or 'no ticket'}"
        seconds = row.get("train_seconds")
        cost = f"{row.get('epochs_trained')} epochs, {seconds:.0f} s" if trained and seconds is not None else \
            "already finished"
        return (f"{head}: sparsity {row.get('sparsity', 0):.4f}, valid {self.metric} "
                f"{row.get(f'valid_{self.metric}', float('nan')):.4f}, test {row.get(f'test_{self.metric}'):.4f}, "
                f"best epoch {row.get('best_epoch')} ({cost})")

    def __call__(self, row: dict, trained: bool) -> None:
        self.done += 1
        text = self.line(row, trained)
        if self.enabled:
            self.bar.write(text)
            self.bar.update(1)
        logger.info(text)
        self._scalars(row)

    def _scalars(self, row: dict) -> None:
        if row.get("sparsity") is None:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_paths.tensorboard / "tickets"))
        step = self.done
        self.writer.add_scalar("ticket/sparsity", row["sparsity"], step)
        self.writer.add_scalar("ticket/active_params", row.get("active_params") or 0, step)
        if row.get(f"valid_{self.metric}") is not None:
            self.writer.add_scalar(f"ticket/valid_{self.metric}", row[f"valid_{self.metric}"], step)
        self.writer.add_text("ticket/name", f"{row.get('ticket')} ({row.get('method')})", step)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
