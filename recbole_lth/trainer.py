"""RecBole trainers with a mask attached: thin wiring, no copy of the loop.

``sparse_trainer(config, model, mask)`` subclasses whatever trainer RecBole
would pick for the model (``get_trainer``) with :class:`SparseTrainerMixin`.
RecBole's own ``fit`` runs unchanged (its data loaders, early stopping on the
validation metric, full-sort evaluator); the mixin only

* attaches the :class:`~recbole_lth.masking.ParameterMask` to the optimizer
  (pruned weights stay exactly zero through every step),
* keeps the best-on-validation weights in memory instead of pickling RecBole's
  Config to disk, and remembers that epoch,
* calls ``epoch_callbacks(trainer, epoch_idx)`` after every training epoch
  (late rewinding captures its state there).
"""
from __future__ import annotations

from recbole.utils import get_trainer

from recbole_lth.masking import ParameterMask


def invalidate_caches(model) -> None:
    """Drop tensors a model derived from its weights (LightGCN's cached
    propagated embeddings): they are stale after any weight change made
    outside a training step."""
    for name in getattr(model, "other_parameter_name", []) or []:
        if hasattr(model, name):
            setattr(model, name, None)


class SparseTrainerMixin:
    def __init__(self, config, model, mask: ParameterMask, epoch_callbacks=()):
        super().__init__(config, model)
        self.mask = mask
        self.mask.attach(self.optimizer)
        self.epoch_callbacks = list(epoch_callbacks)
        self.best_state = None
        self.best_epoch = None
        self.last_epoch = None
        # The loss RecBole's loop optimises; a TicketHook may wrap it (KD).
        self.loss_func = model.calculate_loss

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        # Called by RecBole's fit whenever the validation metric improves.
        self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
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
        self.mask.apply()
        invalidate_caches(self.model)

    def close(self) -> None:
        self.mask.detach()
        writer = getattr(self, "tensorboard", None)
        if writer is not None and hasattr(writer, "close"):
            writer.close()


_CLASSES: dict[type, type] = {}


def sparse_trainer(config, model, mask: ParameterMask, epoch_callbacks=()):
    base = get_trainer(config["MODEL_TYPE"], config["model"])
    if base not in _CLASSES:
        _CLASSES[base] = type(f"Sparse{base.__name__}", (SparseTrainerMixin, base), {})
    return _CLASSES[base](config, model, mask, epoch_callbacks)
