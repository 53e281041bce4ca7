"""RecBole trainers with a mask attached: thin wiring, no copy of the loop.

``sparse_trainer(config, model, mask)`` subclasses whatever trainer RecBole
would pick for the model (``get_trainer``) with :class:`SparseTrainerMixin`.
RecBole's own ``fit`` runs unchanged (its data loaders, early stopping on the
validation metric, full-sort evaluator); the mixin only

* attaches the :class:`~recbole_lth.core.masking.ParameterMask` to the optimizer
  (pruned weights stay exactly zero through every step), built as torch's
  fused implementation of RecBole's learner where one exists,
* keeps the best-on-validation weights in memory instead of pickling RecBole's
  Config to disk, and remembers that epoch,
* calls ``epoch_callbacks(trainer, epoch_idx)`` after every training epoch
  (late rewinding captures its state there),
* evaluates full-sort loaders with their index tensors built once per loader
  (:mod:`recbole_lth.engine.evaluation`: RecBole's metrics, same results).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from recbole.utils import get_trainer

from recbole_lth.core.masking import ParameterMask
from recbole_lth.engine.evaluation import FullSortEvaluation


FUSABLE_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.Adagrad)
# torch has no CUDA kernel for a fused Adagrad; its constructor accepts fused=True
# there and the first step raises (found on the H200).
CPU_ONLY_FUSED = (torch.optim.Adagrad,)


def fused(optimizer, enabled: bool = True):
    """RecBole's optimizer as torch's fused implementation, where one exists.

    Same algorithm and hyper-parameters; the fused kernel is faster, and the
    for-loop Adam's ``exp_avg_sq.sqrt()`` hits a slow CPU path on the exact
    zeros a pruned table keeps in its state (measured 27x slower per
    element), which made a masked BPR step twice a dense one.
    """
    if type(optimizer) not in FUSABLE_OPTIMIZERS or not enabled:
        return optimizer
    devices = {p.device.type for group in optimizer.param_groups for p in group["params"]}
    if type(optimizer) in CPU_ONLY_FUSED and devices != {"cpu"}:
        return optimizer
    try:
        return type(optimizer)([dict(group, fused=True, foreach=None) for group in optimizer.param_groups])
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/dtype
        return optimizer


def invalidate_caches(model) -> None:
    """Drop tensors a model derived from its weights (LightGCN's cached
    propagated embeddings): they are stale after any weight change made
    outside a training step."""
    for name in getattr(model, "other_parameter_name", []) or []:
        if hasattr(model, name):
            setattr(model, name, None)


class SparseTrainerMixin(FullSortEvaluation):
    def __init__(self, config, model, mask: ParameterMask, epoch_callbacks=()):
        super().__init__(config, model)
        self.mask = mask
        self.mask.attach(self.optimizer)
        self.epoch_callbacks = list(epoch_callbacks)
        self.best_state = None
        self.best_masks = None  # the mask of best_state (DSL changes masks while training)
        self.best_epoch = None
        self.last_epoch = None
        # The loss RecBole's loop optimises; a TicketHook may wrap it (KD).
        self.loss_func = model.calculate_loss

    def _build_optimizer(self, **kwargs):
        return fused(super()._build_optimizer(**kwargs), self.config["fused_optimizer"])

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        # Called by RecBole's fit whenever the validation metric improves.
        self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.best_masks = {n: m.clone() for n, m in self.mask.masks.items()}
        self.best_epoch = epoch

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        loss = super()._train_epoch(
            train_data, epoch_idx, loss_func=loss_func or self.loss_func, show_progress=show_progress
        )
        self.last_epoch = epoch_idx
        for callback in self.epoch_callbacks:
            callback(self, epoch_idx)
        return loss

    def load_best(self) -> None:
        """Load the best-on-validation weights (or keep the last ones if
        validation never ran) and clear derived caches."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if self.best_masks is not None:
            self.mask.set_masks(self.best_masks)  # zeroes the weights it prunes
        else:
            self.mask.apply()
        invalidate_caches(self.model)

    def close(self) -> None:
        self.mask.detach()
        close_tensorboard(self)


def close_tensorboard(trainer) -> None:
    """RecBole's trainer opens a TensorBoard writer and never closes it."""
    writer = getattr(trainer, "tensorboard", None)
    if writer is not None and hasattr(writer, "close"):
        writer.close()


@contextmanager
def tensorboard_in(directory):
    """RecBole's trainer opens its TensorBoard writer under ``log_tensorboard/``
    in the working directory; while a trainer is built here, the writer goes
    to ``directory`` (the run directory's) instead.  None: RecBole's place."""
    import recbole.trainer.trainer as recbole_trainer

    if directory is None:
        yield
        return
    from torch.utils.tensorboard import SummaryWriter

    original = recbole_trainer.get_tensorboard
    recbole_trainer.get_tensorboard = lambda logger: SummaryWriter(str(directory))
    try:
        yield
    finally:
        recbole_trainer.get_tensorboard = original


_CLASSES: dict = {}


def sparse_trainer(config, model, mask: ParameterMask, epoch_callbacks=(), tensorboard_dir=None):
    base = get_trainer(config["MODEL_TYPE"], config["model"])
    if base not in _CLASSES:
        _CLASSES[base] = type(f"Sparse{base.__name__}", (SparseTrainerMixin, base), {})
    with tensorboard_in(tensorboard_dir):
        return _CLASSES[base](config, model, mask, epoch_callbacks)


class _EvaluationOnly(FullSortEvaluation):
    def _build_optimizer(self, **kwargs):
        return None  # a compact model has no trainable parameters (BPR: none at all)


def evaluation_trainer(config, model, tensorboard_dir=None):
    """RecBole's trainer for the model, for ``evaluate`` only (no optimizer)."""
    base = get_trainer(config["MODEL_TYPE"], config["model"])
    key = (_EvaluationOnly, base)
    if key not in _CLASSES:
        _CLASSES[key] = type(f"Evaluating{base.__name__}", (_EvaluationOnly, base), {})
    with tensorboard_in(tensorboard_dir):
        return _CLASSES[key](config, model)
