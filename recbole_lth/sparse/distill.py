"""Knowledge distillation from the dense model into sparse tickets (LTH + KD).

A :class:`Distiller` is a :class:`~recbole_lth.engine.run.TicketHook`: for every
ticket whose mask is not full it wraps ``trainer.loss_func`` (the loss
RecBole's own loop optimises) as ``model loss + kd_weight * L_kd``.  The
teacher is a second instance of the same RecBole model class loaded with the
dense weights, in eval mode, with ``requires_grad=False``, scored under
``torch.no_grad()``; it is never registered in the student, so the student's
optimizer, mask and checkpoints never see it.

``kd_type``:

* ``ranking``: Ranking Distillation (Tang & Wang, KDD 2018): the teacher's
  top-``kd_topk`` items of each user, among the items the user has no
  training interaction with, are extra positives with position weights
  ``w_r ∝ exp(-r/λ)`` (r = 1..K, λ = ``kd_temperature``, normalised to sum 1):
  ``L_kd = -mean_rows sum_r w_r log P(u likes π_r)``.  The teacher's top-K is
  computed once per run (the teacher is frozen), in user chunks of the size
  RecBole's full-sort evaluation uses, and kept as an ``n_users x K`` index
  tensor on the device (``8·K·n_users`` bytes: 2.5 MB for yelp2018, K=10).
* ``score``: the KL divergence between the teacher's and the student's
  tempered predictions on the items of the batch, times ``T²`` (Hinton et al.
  2015), ``T = kd_temperature``.  Zero exactly when the scores are equal.  A
  sequential model's batch is its histories (the softmax over the next item),
  a CTR model's its labeled rows (one Bernoulli each): the only KD they take.

What "score" and "P(u likes i)" mean follows each model's own likelihood
(:mod:`recbole_lth.sparse.scoring`; the README's "Distillation and dense baselines").
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from recbole_lth.backbones.base import DeferredRows
from recbole_lth.core import checkpoint, rebind
from recbole_lth.core.errors import ConfigError
from recbole_lth.engine import builder
from recbole_lth.engine.run import Run, TicketHook
from recbole_lth.sparse.scoring import (
    batch_logits, is_autoencoder, is_graph_model, is_multinomial, log_likes, pair_logits, propagate_once, row_logits,
)
from recbole_lth.core.settings import Key, choice_key, number_key

KD_TYPES = ("ranking", "score")

KEYS = (
    number_key("kd_weight", "weight of L_kd added to the model's loss in every sparse ticket; 0: off", 0),
    choice_key("kd_type", "ranking: the teacher's top-kd_topk items as weighted positives (Tang & Wang 2018); "
               "score: KL to the teacher's scores", KD_TYPES),
    number_key("kd_temperature", "score: temperature T; ranking: lambda of the position weights exp(-r/lambda)",
               0, low_open=True),
    number_key("kd_topk", "ranking: teacher items per user", 1, whole=True),
    Key("kd_teacher", "the teacher's weights; null: the run's dense ticket",
        "null (the run's dense ticket) or the path of a recbole_lth checkpoint of the same model and dataset, "
        "e.g. <run_dir>/tickets/dense/ticket.pt",
        lambda x: x is None or (isinstance(x, str) and Path(x).is_file())),
)


# ------------------------------------------------------------------ losses
def score_kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, softmax: bool) -> torch.Tensor:
    """``T² · KL(teacher || student)`` of tempered predictions, mean over rows.

    ``softmax``: one categorical distribution per row; else one Bernoulli
    ``sigmoid(score/T)`` per entry.  Written with log-probabilities so the
    loss is exactly zero when ``student == teacher``.
    """
    s, t = student / temperature, teacher / temperature
    if softmax:
        log_p_t, log_p_s = F.log_softmax(t, dim=-1), F.log_softmax(s, dim=-1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    else:
        p_t = torch.sigmoid(t)
        kl = p_t * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p_t) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return kl.mean() * temperature**2


def ranking_weights(k: int, lam: float, device) -> torch.Tensor:
    """RD's position importance ``w_r ∝ exp(-r/λ)``, r = 1..k, summing to 1."""
    w = torch.exp(-torch.arange(1, k + 1, dtype=torch.float32, device=device) / lam)
    return w / w.sum()


@torch.no_grad()
def teacher_top_items(teacher, dataset, k: int, chunk_users: int, device) -> torch.Tensor:
    """The teacher's top-k items per user among the items without a training
    interaction, ``(n_users, k)`` on ``device``; chunked over users so no
    more than ``chunk_users x n_items`` scores exist at once."""
    history = dataset.inter_matrix(form="csr")  # training interactions only
    n_users = dataset.user_num
    top = torch.empty((n_users, k), dtype=torch.long, device=device)
    for start in range(0, n_users, chunk_users):
        end = min(start + chunk_users, n_users)
        scores = row_logits(teacher, torch.arange(start, end, device=device)).float()
        seen = torch.from_numpy(history[start:end].toarray()).to(device) > 0
        scores.masked_fill_(seen, float("-inf"))
        scores[:, 0] = float("-inf")  # the padding item, as in full-sort evaluation
        top[start:end] = scores.topk(k, dim=1).indices
    return top


# ----------------------------------------------------------------- teacher
TEACHER_ALLOWED = ("a recbole_lth checkpoint of this run's model and dataset (e.g. <run_dir>/tickets/dense/ticket.pt) "
                   "or a model RecBole's trainer saved for them")


# RecBole keys that decide the data split: a teacher trained on another split
# has seen this run's validation or test interactions.
SPLIT_KEYS = ("dataset", "benchmark_filename", "eval_args", "seed", "USER_ID_FIELD", "ITEM_ID_FIELD", "load_col",
              "user_inter_num_interval", "item_inter_num_interval", "val_interval", "rm_dup_inter",
              "filter_inter_by_user_or_item", "threshold")


def _recbole_teacher(path, config) -> tuple[dict, dict]:
    """A checkpoint written by RecBole's trainer (``run_recbole.py``): its
    weights and its config's model and split.  RecBole pickles its Config with
    protocol 4, which torch's weights-only loader cannot read; such a file is
    unpickled in full, which is safe only because the user named it
    (``kd_teacher``); a protocol-2 file (``export --format recbole``) is read
    weights-only, RecBole's types being allowlisted by the compatibility module."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # protocol 4: only a full unpickle reads it
        payload = torch.load(path, map_location="cpu", weights_only=False)
    if not (isinstance(payload, dict) and "state_dict" in payload and "config" in payload):
        raise ValueError("neither a recbole_lth checkpoint nor one written by RecBole's trainer")
    theirs = payload["config"]
    for key in ("model",) + SPLIT_KEYS:
        if theirs[key] != config[key]:
            raise ConfigError("kd_teacher", str(path), f"{TEACHER_ALLOWED}; its {key} is {theirs[key]!r}, this "
                                                       f"run's is {config[key]!r} (the same model, dataset and split)")
    return payload["state_dict"], {"model": theirs["model"], "dataset": theirs["dataset"]}


def check_teacher_file(path, model, config) -> dict:
    """The weights of ``kd_teacher``: a recbole_lth checkpoint (a ticket), or a
    model RecBole's ``run_recbole.py`` saved, refused unless it is this run's
    model class, dataset (and split) and shapes."""
    try:
        payload = checkpoint.load(path)
        state, meta = payload.get("state_dict") or {}, payload.get("meta") or {}
    except checkpoint.CorruptCheckpoint as ours:
        try:
            state, meta = _recbole_teacher(path, config)
        except ConfigError:
            raise
        except Exception as err:  # not a torch file, or not a checkpoint
            raise ConfigError("kd_teacher", path, f"{TEACHER_ALLOWED}; loading it failed: {ours}; as RecBole's: "
                                                  f"{err}") from err
    for key in ("model", "dataset"):
        if meta.get(key) not in (None, config[key]):
            raise ConfigError("kd_teacher", path, f"{TEACHER_ALLOWED}; it was trained as {key} {meta[key]!r}, "
                                                  f"this run's {key} is {config[key]!r}")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        differing = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
        raise ConfigError("kd_teacher", path, f"{TEACHER_ALLOWED}; these tensors differ: {', '.join(differing[:5])}")
    return state


def teacher_state(run: Run) -> dict:
    """The teacher's weights: ``kd_teacher`` if set, else the run's dense ticket."""
    path = run.settings.get("kd_teacher")
    if not path:
        return run.dense().state_dict
    return check_teacher_file(path, run.model, run.config)


def build_teacher(run: Run, state: dict):
    """A frozen second instance of the run's model class holding ``state``."""
    # Forked RNG: a KD ticket trains with the same random stream (dropout,
    # sampling) as without KD.
    teacher = builder.new_model(run.config, run.train_data.dataset, fork_rng=True)
    teacher.load_state_dict(state)
    teacher.eval()
    teacher.requires_grad_(False)
    if is_graph_model(teacher):
        # A frozen graph model propagates once (KD_on_Ranking does the same).
        with torch.no_grad():
            propagated = teacher.forward()
        rebind.put(teacher, "forward", lambda: propagated)
    return teacher


def _mask_is_full(mask) -> bool:
    # One host sync per ticket.
    return all(bool(m.all()) for m in mask.masks.values())


class Distiller(TicketHook):
    """Adds ``kd_weight · L_kd`` to the loss of every ticket with a sparse mask."""

    def __init__(self, settings: dict, teacher_weights: dict | None = None):
        self.weight = float(settings["kd_weight"])
        self.kd_type = settings["kd_type"]
        self.temperature = float(settings["kd_temperature"])
        self.topk = int(settings["kd_topk"])
        self.teacher_weights = teacher_weights
        self.teacher = None
        self.teacher_topk = None  # (n_users, kd_topk) item ids, ranking KD
        self.rank_weights = None
        self.active = False
        self.deferred = None  # DeferredRows of a ticket's training

    def load_teacher(self, run: Run) -> None:
        if self.teacher is not None:
            return
        self.teacher = build_teacher(run, self.teacher_weights)
        if self.kd_type == "ranking":
            n_items = run.train_data.dataset.item_num
            chunk = max(1, run.config["eval_batch_size"] // n_items)
            self.teacher_topk = teacher_top_items(self.teacher, run.train_data.dataset, self.topk, chunk, run.device)
            self.rank_weights = ranking_weights(self.topk, self.temperature, run.device)

    def attach(self, run: Run, trainer) -> None:
        # The dense ticket is the teacher itself (and the baselines are dense).
        self.active = not _mask_is_full(trainer.mask)
        if not self.active:
            return
        self.load_teacher(run)
        model, base_loss = trainer.model, trainer.loss_func
        # The KD rows' gradients join the model's in the optimizer's pre-step
        # (first, so every other observer sees them), unless RecBole clips
        # gradients between backward and step: then autograd adds them.
        self.deferred = None if trainer.config["clip_grad_norm"] else DeferredRows()
        if self.deferred is not None:
            trainer.mask.grad_observers.insert(0, lambda mask: self.deferred.flush())

        def loss_with_kd(interaction):
            with propagate_once(model):
                losses = base_loss(interaction)
                kd = self.weight * self.kd_loss(model, interaction)
            # RecBole sums a tuple of loss parts and logs each; KD is one more part.
            return (*losses, kd) if isinstance(losses, tuple) else losses + kd

        trainer.use_loss(loss_with_kd)

    def kd_loss(self, model, interaction) -> torch.Tensor:
        batch = batch_logits(model)
        if batch is not None:  # a sequential or CTR batch: its own scores, the teacher's under no_grad
            student = batch(model, interaction)
            with torch.no_grad():
                teacher = batch(self.teacher, interaction)
            return score_kd_loss(student, teacher, self.temperature, softmax=is_multinomial(model))
        users = interaction[model.USER_ID]
        if self.kd_type == "ranking":
            items = self.teacher_topk[users]
            return -(log_likes(model, users, items, self.deferred) * self.rank_weights).sum(1).mean()
        if is_autoencoder(model):
            # The batch rows are whole users: all items' scores.
            student = row_logits(model, users)
            with torch.no_grad():
                teacher = row_logits(self.teacher, users)
        else:
            # The batch's positive and sampled items (pairwise) or its items (pointwise).
            items = interaction[model.ITEM_ID].unsqueeze(1)
            if model.NEG_ITEM_ID in interaction:
                items = torch.cat([items, interaction[model.NEG_ITEM_ID].unsqueeze(1)], dim=1)
            student = pair_logits(model, users, items)
            with torch.no_grad():
                teacher = pair_logits(self.teacher, users, items)
        return score_kd_loss(student, teacher, self.temperature, softmax=is_multinomial(model))

    def row_fields(self) -> dict:
        return {"kd_weight": self.weight if self.active else 0.0, "kd_type": self.kd_type if self.active else ""}

    def diverged_hint(self) -> str:
        return f"kd_weight (now {self.weight})" if self.active else ""


def install(run: Run) -> None:
    """With ``kd_weight > 0``, distil every sparse ticket of any method.

    The teacher is ``kd_teacher``, or the run's dense ticket, trained first
    when the method has not trained it yet (so no training is nested in
    another)."""
    settings = run.settings
    if not settings.get("kd_weight"):
        return
    n_items = run.train_data.dataset.item_num if settings["kd_type"] == "ranking" else 0
    if settings["kd_type"] == "ranking" and settings["kd_topk"] >= n_items:
        raise ConfigError("kd_topk", settings["kd_topk"], f"a whole number below the number of items ({n_items})")
    run.ticket_hooks.append(Distiller(settings, teacher_state(run)))
