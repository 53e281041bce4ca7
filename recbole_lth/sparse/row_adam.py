"""Adam on the rows of a table that a step looked up (row-sparse, "lazy" Adam).

A table read by lookup gets a gradient in the rows a batch looked up only,
but dense Adam still moves every other row: its momentum is not zero, nor is
an L2 gradient (``weight_decay · row``), so a dense step costs the table.
:class:`RowAdam` updates the looked-up rows as ``torch.optim.Adam`` would
(torch's own kernel, with the bias correction of the optimizer's step
count), and leaves the other rows and
their moments as they are, as ``torch.optim.SparseAdam`` and TensorFlow's
``LazyAdam`` do.  That is a change of the algorithm for rows not looked up;
when a step looks up every row (or reads the table whole) it is torch's Adam
bit for bit (its functional form, fused where asked).  All work stays on the
table's device, with no host sync.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.optim.adam import adam

from recbole_lth.core.optim import step_rows


class _Lookup(torch.autograd.Function):
    """``table[index]`` whose backward hands the rows' gradient to a
    :class:`RowAdam` instead of building a table-sized ``table.grad``."""

    @staticmethod
    def forward(ctx, table, index, sink):
        ctx.save_for_backward(index)
        ctx.sink = sink
        return F.embedding(index, table)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        ctx.sink.accumulate(index, grad)
        return None, None, None


class RowAdam:
    """Adam for one table, updating the rows the step looked up through
    :meth:`lookup` (every row when something also read the whole table and
    so set ``table.grad``)."""

    def __init__(self, table: torch.nn.Parameter, lr: float, weight_decay: float = 0.0, fused: bool = True,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.table = table
        self.hyper = dict(lr=lr, weight_decay=weight_decay, beta1=betas[0], beta2=betas[1], eps=eps,
                          amsgrad=False, maximize=False)
        self.fused = fused
        self.exp_avg = torch.zeros_like(table, memory_format=torch.preserve_format)
        self.exp_avg_sq = torch.zeros_like(table, memory_format=torch.preserve_format)
        # The step's lookup gradients summed per row (a row looked up twice
        # gets one update from both); zero outside the rows in `touched`.
        self.grad = torch.zeros_like(table, memory_format=torch.preserve_format)
        self.touched: list[torch.Tensor] = []
        # Where torch.optim.Adam keeps the step count: on the device for the
        # fused kernel, on the host otherwise (read there without a device sync).
        self.state_step = torch.zeros((), dtype=torch.float32, device=table.device if fused else "cpu")
        # The gathered rows (parameter, gradient, moments), reused: a fresh
        # allocation of a megabyte or more page-faults on every step with
        # glibc's default malloc (measured: 8x the cost of the arithmetic).
        self.work = torch.empty((4, 0, *table.shape[1:]), dtype=table.dtype, device=table.device)

    def lookup(self, index: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Drop-in for ``F.embedding(index, table)`` on this optimizer's table."""
        return _Lookup.apply(table, index, self)

    def accumulate(self, index: torch.Tensor, grad: torch.Tensor) -> None:
        flat = index.reshape(-1)
        self.grad.index_add_(0, flat, grad.reshape(flat.numel(), *self.table.shape[1:]))
        self.touched.append(flat)

    @torch.no_grad()
    def step(self) -> int:
        """One Adam step on the rows read since the last one; returns how many
        entries it updated (a row looked up twice counts twice: the cost)."""
        whole = self.table.grad is not None
        if not whole and not self.touched:
            self.state_step += 1  # the step count is the optimizer's, as in dense Adam's bias correction
            return 0
        if whole:
            self.grad += self.table.grad
            self._adam(self.table, self.grad, self.exp_avg, self.exp_avg_sq)
            self.grad.zero_()
            self.table.grad = None
            updated = self.table.numel()
        else:
            updated = self._step_rows(torch.cat(self.touched))
        self.touched.clear()
        return updated

    def _step_rows(self, rows: torch.Tensor) -> int:
        tables = (self.table, self.grad, self.exp_avg, self.exp_avg_sq)
        self.work = step_rows(tables, rows, self.work, self._adam)
        return rows.numel() * self.table[0].numel()

    def _adam(self, param, grad, exp_avg, exp_avg_sq) -> None:
        """torch's own Adam (its functional form, fused or single-tensor), so
        that the floats are those of ``torch.optim.Adam`` on the same rows."""
        adam([param], [grad], [exp_avg], [exp_avg_sq], [], [self.state_step], fused=self.fused or None,
             foreach=False, **self.hyper)
