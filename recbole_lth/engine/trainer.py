"""The trainer adapter: the one module that touches RecBole's trainer internals.

Methods change how a model trains through :class:`TrainingHook` (the
lifecycle: after each optimizer step, at each epoch's end, whether early
stopping may count an epoch yet, whether an epoch may be selected as the
best, each validation's score), handed to one factory:

* :func:`sparse_trainer` ``(config, model, mask, epoch_callbacks, tensorboard_dir, hooks)``:
  whatever trainer RecBole picks for the model (``get_trainer``) with
  :class:`SparseTrainerMixin`; RecBole's own ``fit`` runs unchanged (its data
  loaders, early stopping on the validation metric, full-sort evaluator);
  the mixin attaches the :class:`~recbole_lth.core.masking.ParameterMask`
  to the optimizer (pruned weights stay exactly zero through every step),
  built as torch's fused implementation of RecBole's learner where one
  exists; keeps the best-on-validation weights in memory instead of pickling
  RecBole's Config to disk, and remembers that epoch; calls
  ``epoch_callbacks(trainer, epoch_idx)`` after every training epoch (late
  rewinding captures its state there); evaluates full-sort loaders with their
  index tensors built once per loader (:mod:`recbole_lth.engine.evaluation`).
* :func:`hooked_trainer` ``(config, model, param_groups, hooks, tensorboard_dir)``:
  the same lifecycle on a trainer with no mask whose optimizer holds the
  given parameter groups (PEP's search: the weights and the thresholds).

:func:`train` runs RecBole's ``fit`` and returns whether a hook stopped it.
RecBole's private trainer API (``_train_epoch``, ``_valid_epoch``,
``_build_optimizer``, ``_full_sort_batch_eval``, ``get_tensorboard``,
``stopping_step``/``cur_step``) is used here and nowhere else
(``tests/test_architecture.py``), so a RecBole release that changes it is
fixed in this module.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from recbole.utils import get_trainer

from recbole_lth.core import rebind
from recbole_lth.core.masking import ParameterMask
from recbole_lth.core.optim import LazyAdam, RowwiseAdagrad, is_sparse_learner
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


def build_optimizer(trainer, **kwargs):
    """RecBole's optimizer for ``trainer`` (``_build_optimizer``'s keywords),
    fused where torch has a kernel; ``learner: sparse_adam`` is
    :class:`~recbole_lth.core.optim.LazyAdam` (RecBole's SparseAdam refuses every
    dense gradient a model has), ``rowwise_adagrad``
    :class:`~recbole_lth.core.optim.RowwiseAdagrad`."""
    learner = str(kwargs.get("learner", trainer.config["learner"])).lower()
    if is_sparse_learner(learner):
        params = kwargs.get("params", trainer.model.parameters())
        keys = dict(lr=kwargs.get("learning_rate", trainer.config["learning_rate"]),
                    weight_decay=kwargs.get("weight_decay", trainer.config["weight_decay"]) or 0.0)
        if learner == "rowwise_adagrad":
            return RowwiseAdagrad(params, **keys)
        return LazyAdam(params, fused=bool(trainer.config["fused_optimizer"]), **keys)
    return fused(trainer._build_optimizer(**kwargs), trainer.config["fused_optimizer"])


def invalidate_caches(model) -> None:
    """Drop tensors a model derived from its weights (LightGCN's cached
    propagated embeddings): they are stale after any weight change made
    outside a training step."""
    for name in getattr(model, "other_parameter_name", []) or []:
        if hasattr(model, name):
            setattr(model, name, None)


class TrainingHook:
    """The training lifecycle a method may hook into (every method a no-op by default).

    ``after_step``: after each optimizer step (no host sync expected: it runs
    every step); True stops the training now.  ``epoch_end``: after each
    training epoch, before its validation; True stops the training after it.
    ``patience_counts``: whether RecBole's early stopping may count this
    epoch's validation (False holds the patience; it counts afresh from the
    first epoch every hook allows).  ``selectable``: whether this epoch may be
    selected as the best (False: validated and logged, never the best).
    ``validated``: each validation's score, as RecBole computed it.
    """

    def after_step(self, trainer) -> bool | None:
        return None

    def epoch_end(self, trainer, epoch_idx: int) -> bool | None:
        return None

    def patience_counts(self, trainer, epoch_idx: int) -> bool:
        return True

    def selectable(self, trainer, epoch_idx: int) -> bool:
        return True

    def validated(self, trainer, epoch_idx: int, score: float) -> None:
        pass


class _Stop(Exception):
    """A hook stopped the training (caught by :func:`train`)."""


def _overrides(hook, name: str) -> bool:
    return getattr(type(hook), name) is not getattr(TrainingHook, name)


class _Adapter(FullSortEvaluation):
    """What every trainer built here has: RecBole's full-sort batch scoring, by a public name."""

    def full_sort_scores(self, users, history):
        """RecBole's scores of a full-sort batch (its -inf writes on history included)."""
        return self._full_sort_batch_eval((users, history, None, None))[1]


class _Lifecycle(_Adapter):
    """Runs the hooks' lifecycle inside RecBole's own ``fit``."""

    hooks: tuple = ()
    last_epoch = None  # the last training epoch that ended
    _held_patience = None  # RecBole's stopping_step while a hook holds it
    _step_handle = None

    def use_hooks(self, hooks) -> None:
        self.hooks = tuple(hooks)
        self.watch_steps()

    @property
    def step_handle(self):
        """The handle of the hooks' ``after_step`` on the optimizer (``.remove()``), or None."""
        return self._step_handle

    def watch_steps(self):
        """(Re)register the hooks' ``after_step`` on the current optimizer; returns the handle (``.remove()``)."""
        if self._step_handle is not None:
            self._step_handle.remove()
        stepping = [h for h in self.hooks if _overrides(h, "after_step")]
        self._step_handle = None
        if stepping and self.optimizer is not None:
            def after_step(optimizer, args, kwargs):
                if any([bool(h.after_step(self)) for h in stepping]):
                    raise _Stop
            self._step_handle = self.optimizer.register_step_post_hook(after_step)
        return self._step_handle

    def epoch_done(self, epoch_idx: int) -> None:
        """The end of a training epoch: hooks, then whether early stopping may count it."""
        self.last_epoch = epoch_idx
        stop = any([bool(h.epoch_end(self, epoch_idx)) for h in self.hooks])
        counts = all(h.patience_counts(self, epoch_idx) for h in self.hooks)
        if not counts and self._held_patience is None:
            self._held_patience, self.stopping_step = self.stopping_step, float("inf")
        elif counts and self._held_patience is not None:  # counts afresh from here
            self.stopping_step, self.cur_step, self._held_patience = self._held_patience, 0, None
        if stop:
            raise _Stop

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.epoch_done(epoch_idx)
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        for hook in self.hooks:
            hook.validated(self, self.last_epoch, score)
        if not all(h.selectable(self, self.last_epoch) for h in self.hooks):
            # NaN is never an improvement for RecBole's early stopping, in either direction.
            score = float("nan")
        return score, result

    def close(self) -> None:
        if self._step_handle is not None:
            self._step_handle.remove()
            self._step_handle = None
        close_tensorboard(self)


def train(trainer, train_data, valid_data=None, show_progress: bool = False) -> bool:
    """RecBole's ``fit`` (the best epoch kept in memory when ``valid_data`` is
    given); True when a hook stopped it."""
    try:
        trainer.fit(train_data, valid_data, verbose=True, saved=valid_data is not None, show_progress=show_progress)
    except _Stop:
        return True
    return False


class SparseTrainerMixin(_Lifecycle):
    def __init__(self, config, model, mask: ParameterMask, epoch_callbacks=(), hooks=()):
        super().__init__(config, model)
        self.mask = mask
        self.mask.attach(self.optimizer)
        self.epoch_callbacks = list(epoch_callbacks)
        self.best_state = None
        self.best_masks = None  # the mask of best_state (DSL changes masks while training)
        self.best_epoch = None
        # The loss RecBole's loop optimises; a TicketHook may wrap it (KD).
        self.loss_func = model.calculate_loss
        self.use_hooks(hooks)

    def use_loss(self, loss_func) -> None:
        """The loss RecBole's loop optimises from now on (a TicketHook's wrapper of ``loss_func``)."""
        self.loss_func = loss_func

    def _build_optimizer(self, **kwargs):
        if is_sparse_learner(kwargs.get("learner", self.config["learner"])):
            return build_optimizer(self, **kwargs)
        return fused(super()._build_optimizer(**kwargs), self.config["fused_optimizer"])

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        # Called by RecBole's fit whenever the validation metric improves.
        self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.best_masks = {n: m.clone() for n, m in self.mask.masks.items()}
        self.best_epoch = epoch

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func or self.loss_func,
                                    show_progress=show_progress)

    def epoch_done(self, epoch_idx: int) -> None:
        self.last_epoch = epoch_idx
        for callback in self.epoch_callbacks:
            callback(self, epoch_idx)
        super().epoch_done(epoch_idx)

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
        super().close()


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

    with rebind.swapped(recbole_trainer, "get_tensorboard", lambda logger: SummaryWriter(str(directory))):
        yield


_CLASSES: dict = {}


def _trainer_class(mixin, config):
    base = get_trainer(config["MODEL_TYPE"], config["model"])
    key = (mixin, base)
    if key not in _CLASSES:
        _CLASSES[key] = type(f"{mixin.PREFIX}{base.__name__}", (mixin, base), {})
    return _CLASSES[key]


SparseTrainerMixin.PREFIX = "Sparse"


def sparse_trainer(config, model, mask: ParameterMask, epoch_callbacks=(), tensorboard_dir=None, hooks=()):
    """RecBole's trainer for the model, ``mask`` attached, with the hooks' lifecycle."""
    with tensorboard_in(tensorboard_dir):
        return _trainer_class(SparseTrainerMixin, config)(config, model, mask, epoch_callbacks, hooks)


class _Hooked(_Lifecycle):
    PREFIX = "Hooked"


def hooked_trainer(config, model, param_groups, hooks=(), tensorboard_dir=None):
    """RecBole's trainer for the model with no mask, its optimizer (RecBole's
    learner, fused where torch has a kernel) over ``param_groups``, with the
    hooks' lifecycle."""
    with tensorboard_in(tensorboard_dir):
        trainer = _trainer_class(_Hooked, config)(config, model)
    trainer.optimizer = build_optimizer(trainer, params=param_groups)
    trainer.use_hooks(hooks)
    return trainer


class _EvaluationOnly(_Adapter):
    PREFIX = "Evaluating"

    def _build_optimizer(self, **kwargs):
        return None  # a compact model has no trainable parameters (BPR: none at all)


def evaluation_trainer(config, model, tensorboard_dir=None):
    """RecBole's trainer for the model, for ``evaluate`` only (no optimizer)."""
    with tensorboard_in(tensorboard_dir):
        return _trainer_class(_EvaluationOnly, config)(config, model)
