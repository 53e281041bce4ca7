"""RecBole's ``learner: sparse_adam``: tables read row by row, updated row by row.

RecBole builds ``torch.optim.SparseAdam`` for ``sparse_adam``, but no RecBole
model reads its tables with sparse gradients, so the first step fails; and a
dense table gradient makes every step cost the table (zeroing and filling
it, Adam's moments over every row) whatever the batch.  Here
:func:`read_rows_sparsely` switches a model's ``nn.Embedding`` lookups to
sparse gradients, and :class:`LazyAdam` is the one optimizer RecBole's
trainer sees:

* a parameter whose gradient is sparse (a table read only by lookups) gets
  Adam's update on the rows the step looked up, computed by torch's own
  Adam kernel on those rows, and its other rows and their moments are left
  as they are: lazy Adam, as ``torch.optim.SparseAdam`` and TensorFlow's
  ``LazyAdam``.  The step count is the parameter's, as in Adam.
* a parameter with a dense gradient (a layer, or a table something also
  read whole: LightGCN's propagation, SASRec's output scores) gets torch's
  Adam, so on such a table a step costs what it costs with ``adam``.

``learner: rowwise_adagrad`` is :class:`RowwiseAdagrad` the same way
(FBGEMM's row-wise Adagrad on looked-up rows, torch's Adagrad elsewhere).

Why not ``torch.optim.SparseAdam`` itself: it coalesces the gradient (a
sort and a host sync per table per step on CUDA), adds ``eps`` outside the
bias correction (a different update from Adam's in the smallest moments),
has no weight decay, and refuses dense gradients.  Here a row looked up
twice is summed into a reused table-shaped buffer (``index_add_``, zero
outside the step's rows) and updated once per occurrence with the same
values, so nothing waits for the host; ``weight_decay`` is Adam's L2 on the
looked-up rows.  The state holds ``exp_avg`` and ``exp_avg_sq`` of the
parameter's shape, as Adam's, so the mask core zeroes them where it prunes.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.adam import adam

SPARSE_LEARNERS = ("sparse_adam", "rowwise_adagrad")


def is_sparse_learner(learner) -> bool:
    return str(learner).lower() in SPARSE_LEARNERS


def read_rows_sparsely(model: nn.Module) -> list[str]:
    """Every ``nn.Embedding`` of ``model`` looks rows up with a sparse
    gradient from now on; returns their weights' names."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            module.sparse = True
            names.append(f"{name}.weight" if name else "weight")
    return names


def dense_grad(grad: torch.Tensor | None) -> torch.Tensor | None:
    """The gradient as a dense tensor (O(table): for a score read at an update step, not per step)."""
    return grad.to_dense() if grad is not None and grad.is_sparse else grad


def sparse_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, values)`` of a row-sparse gradient, uncoalesced (a row looked up twice appears twice)."""
    return grad._indices()[0], grad._values()


class _RowSparse(torch.optim.Optimizer):
    """An optimizer that updates each parameter with a gradient by ``_update`` (rows or whole)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param, group) -> None:
        raise NotImplementedError


class LazyAdam(_RowSparse):
    """Adam; on a parameter with a sparse gradient, only on the rows it holds (see the module)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 fused: bool = True):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused))

    def _state(self, param: torch.Tensor, fused: bool) -> dict:
        state = self.state[param]
        if not state:
            # Adam's own layout: the step on the device for the fused kernel, else on the host.
            device = param.device if fused else "cpu"
            state["step"] = torch.zeros((), dtype=torch.float32, device=device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def _update(self, param, group) -> None:
        fused = bool(group["fused"]) and _fusable(param)
        state = self._state(param, fused)
        if param.grad.is_sparse:
            self._rows(param, group, state, fused)
        else:
            _adam(param, param.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], group, fused)

    def _rows(self, param, group, state, fused) -> None:
        rows, values = sparse_rows(param.grad)
        if "summed" not in state:  # zero outside a step's rows, and zeroed again after it
            state["summed"] = torch.zeros_like(param)
            state["work"] = param.new_empty((4, 0, *param.shape[1:]))
        state["summed"].index_add_(0, rows, values)
        tensors = (param, state["summed"], state["exp_avg"], state["exp_avg_sq"])
        state["work"] = step_rows(tensors, rows, state["work"],
                                  lambda *picked: _adam(*picked, state["step"], group, fused))


def step_rows(tensors, rows: torch.Tensor, work: torch.Tensor, update) -> torch.Tensor:
    """``update(param, grad, exp_avg, exp_avg_sq)`` on the ``rows`` of the four
    table-shaped ``tensors`` (the grad zero outside them: zeroed again here),
    gathered into ``work`` (4 × rows × row shape, reused: a fresh
    megabyte-sized allocation page-faults on every step with glibc's malloc,
    8x the arithmetic).  Returns ``work`` (grown if it had to be).  O(rows),
    no host sync."""
    param, grad, exp_avg, exp_avg_sq = tensors
    rows = rows.sort().values  # locality for the gathers; a repeated row stays repeated
    n = rows.numel()
    if work.shape[1] < n:
        work = param.new_empty((4, n, *param.shape[1:]))
    picked = work[:, :n].unbind(0)
    for full, out in zip(tensors, picked):
        torch.index_select(full, 0, rows, out=out)
    update(*picked)
    # A row repeated in `rows` got the same new values at each place: either write is right.
    for full, new in ((param, picked[0]), (exp_avg, picked[2]), (exp_avg_sq, picked[3])):
        full.index_copy_(0, rows, new)
    grad.index_fill_(0, rows, 0)
    return work


class RowwiseAdagrad(_RowSparse):
    """FBGEMM's row-wise Adagrad (torchrec's default for embedding tables) on
    a row-sparse gradient: one accumulator per row, ``G_r += mean(g_r²)``,
    ``w_r -= lr · g_r / (√G_r + eps)``, on the looked-up rows only; a
    ``(rows,)`` state instead of Adam's two table-sized moments.  A dense
    gradient (a layer, or a table read whole) gets torch's Adagrad (its
    single-tensor form: ``sum += g²``, ``w -= lr · g / (√sum + eps)``).
    ``weight_decay``: L2 added to the gradient (the looked-up rows only)."""

    def __init__(self, params, lr: float = 1e-2, eps: float = 1e-10, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay))

    def _update(self, param, group) -> None:
        if param.grad.is_sparse:
            self._rows(param, group, self.state[param])
        else:
            self._dense(param, group, self.state[param])

    def _dense(self, param, group, state) -> None:
        if "sum" not in state:
            state["sum"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        grad = param.grad if not group["weight_decay"] else param.grad.add(param, alpha=group["weight_decay"])
        state["sum"].addcmul_(grad, grad, value=1)
        param.addcdiv_(grad, state["sum"].sqrt().add_(group["eps"]), value=-group["lr"])

    def _rows(self, param, group, state) -> None:
        if "row_sum" not in state:
            state["row_sum"] = param.new_zeros(param.shape[0])
            state["summed"] = torch.zeros_like(param)  # zero outside a step's rows
        rows, values = sparse_rows(param.grad)
        state["summed"].index_add_(0, rows, values)
        rows = rows.sort().values
        weight, grad = param.index_select(0, rows), state["summed"].index_select(0, rows)
        if group["weight_decay"]:
            grad.add_(weight, alpha=group["weight_decay"])
        # A row looked up twice appears twice with the same summed gradient: the same new values.
        row_sum = state["row_sum"].index_select(0, rows) + grad.pow(2).flatten(1).mean(1)
        scale = (row_sum.sqrt() + group["eps"]).reshape(-1, *[1] * (param.dim() - 1))
        param.index_copy_(0, rows, weight - group["lr"] * grad / scale)
        state["row_sum"].index_copy_(0, rows, row_sum)
        state["summed"].index_fill_(0, rows, 0)


def _fusable(param: torch.Tensor) -> bool:
    return param.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16) and param.device.type in (
        "cpu", "cuda")


def _adam(param, grad, exp_avg, exp_avg_sq, step, group, fused) -> None:
    """torch's Adam (functional; fused where asked), so the floats are ``torch.optim.Adam``'s."""
    beta1, beta2 = group["betas"]
    adam([param], [grad], [exp_avg], [exp_avg_sq], [], [step], fused=fused or None, foreach=False,
         amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
         eps=group["eps"], maximize=False)
