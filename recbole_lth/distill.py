"""Knowledge distillation from the dense model into sparse tickets (LTH + KD).

A :class:`Distiller` is a :class:`~recbole_lth.search.TicketHook`: for every
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
  2015), ``T = kd_temperature``.  Zero exactly when the scores are equal.

What "score" and "P(u likes i)" mean follows each model's own likelihood
(see ``README.md``, "Distillation and dense baselines").
"""
from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from recbole_lth import checkpoint
from recbole_lth.errors import ConfigError
from recbole_lth.search import Run, TicketHook

KD_TYPES = ("ranking", "score")

# The ticket in which each method trains its own dense model (the default
# teacher).  A method not listed gets a "dense" ticket trained first.
DENSE_TICKET = {
    "dense": "dense",
    "imp": "round_00",
    "wr": "round_00",
    "imp_kd": "round_00",
    "omp": "dense",
    "omp_kd": "dense",
}


# ------------------------------------------------------------------ scores
def _recbole_classes():
    from recbole.model.abstract_recommender import AbstractRecommender, AutoEncoderMixin
    from recbole.model.general_recommender import CDAE, MultiVAE, NeuMF

    return AbstractRecommender, AutoEncoderMixin, CDAE, MultiVAE, NeuMF


def _interaction(fields: dict):
    from recbole.data.interaction import Interaction

    return Interaction(fields)


def row_logits(model, users: torch.Tensor) -> torch.Tensor:
    """Every item's score for each user, ``(B, n_items)``, before any output
    activation (what full-sort evaluation ranks)."""
    AbstractRecommender, _, CDAE, MultiVAE, _ = _recbole_classes()
    if isinstance(model, MultiVAE):
        return model.forward(model.get_rating_matrix(users))[0]
    if isinstance(model, CDAE):  # full_sort_predict would add the output sigmoid
        return model.forward(model.get_rating_matrix(users), users)
    if type(model).full_sort_predict is AbstractRecommender.full_sort_predict:
        # NeuMF: no full-sort scorer; score (user, item) pairs as RecBole's evaluation does.
        items = torch.arange(model.n_items, device=users.device).expand(len(users), -1)
        return pair_logits(model, users, items)
    return model.full_sort_predict(_interaction({model.USER_ID: users})).view(len(users), -1)


def pair_logits(model, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Scores of ``items`` (``(B, K)``) for ``users`` (``(B,)``), ``(B, K)``."""
    _, AutoEncoderMixin, _, _, NeuMF = _recbole_classes()
    if isinstance(model, AutoEncoderMixin):
        # The autoencoders score whole rows anyway; the batch is those rows.
        return row_logits(model, users).gather(1, items)
    flat_users = users.unsqueeze(1).expand_as(items).reshape(-1)
    flat_items = items.reshape(-1)
    if isinstance(model, NeuMF):  # predict() adds a sigmoid; forward() is the logit
        scores = model.forward(flat_users, flat_items)
    else:
        scores = model.predict(_interaction({model.USER_ID: flat_users, model.ITEM_ID: flat_items}))
    return scores.view(items.shape)


def _multinomial(model) -> bool:
    """MultiVAE's likelihood is a softmax over all items; the others score
    each (user, item) pair with a sigmoid (BPR/LightGCN as in RD, NeuMF/CDAE BCE)."""
    return isinstance(model, _recbole_classes()[3])


def log_likes(model, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """log P(user likes item) under the model's own likelihood, ``(B, K)``."""
    if _multinomial(model):
        return F.log_softmax(row_logits(model, users), dim=1).gather(1, items)
    return F.logsigmoid(pair_logits(model, users, items))


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


@contextmanager
def propagate_once(model):
    """Graph models (``forward()`` without inputs, LightGCN) propagate the
    whole graph per call.  Within one loss evaluation the weights do not
    change, so the model loss and the KD term share one propagation (and one
    autograd graph)."""
    if inspect.signature(model.forward).parameters:
        yield
        return
    original = model.forward
    cached = []

    def forward_once():
        if not cached:
            cached.append(original())
        return cached[0]

    model.forward = forward_once
    try:
        yield
    finally:
        del model.forward


# ----------------------------------------------------------------- teacher
def dense_ticket(run: Run):
    """The run's dense model as a ticket (trained once, then reloaded)."""
    return run.ticket(
        "dense", round_idx=0, target_sparsity=0.0, masks=run.full_masks(), start_state=run.init_state()
    )


def teacher_state(run: Run, ticket_key: str | None) -> dict:
    """The teacher's weights: ``kd_teacher`` if set, else the run's ticket ``ticket_key``."""
    path = run.settings.get("kd_teacher")
    if not path:
        return checkpoint.load(run.run_dir / "tickets" / ticket_key / "ticket.pt")["state_dict"]
    allowed = "a recbole_lth checkpoint of this run's model and dataset (e.g. <run_dir>/tickets/round_00/ticket.pt)"
    try:
        state = checkpoint.load(path).get("state_dict")
    except Exception as err:  # not a torch file, or not ours
        raise ConfigError("kd_teacher", path, f"{allowed}; loading it failed: {err}") from err
    expected = {k: tuple(v.shape) for k, v in run.model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in (state or {}).items()}
    if found != expected:
        differing = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
        raise ConfigError("kd_teacher", path, f"{allowed}; these tensors differ: {', '.join(differing[:5])}")
    return state


def build_teacher(run: Run, state: dict):
    """A frozen second instance of the run's model class holding ``state``."""
    from recbole.utils import get_model

    config = run.config
    # Building a model draws its random init: fork the RNG so that a KD ticket
    # trains with the same random stream (dropout, sampling) as without KD.
    devices = [run.device] if torch.device(run.device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        teacher = get_model(config["model"])(config, run.train_data.dataset).to(run.device)
    teacher.load_state_dict(state)
    teacher.eval()
    teacher.requires_grad_(False)
    if not inspect.signature(teacher.forward).parameters:
        # A frozen graph model propagates once (KD_on_Ranking does the same).
        with torch.no_grad():
            propagated = teacher.forward()
        teacher.forward = lambda: propagated
    return teacher


def _mask_is_full(mask) -> bool:
    # One host sync per ticket.
    return all(bool(m.all()) for m in mask.masks.values())


class Distiller(TicketHook):
    """Adds ``kd_weight · L_kd`` to the loss of every ticket with a sparse mask."""

    def __init__(self, settings: dict, teacher_ticket: str | None = None):
        self.weight = float(settings["kd_weight"])
        self.kd_type = settings["kd_type"]
        self.temperature = float(settings["kd_temperature"])
        self.topk = int(settings["kd_topk"])
        self.teacher_ticket = teacher_ticket
        self.teacher = None
        self.teacher_topk = None  # (n_users, kd_topk) item ids, ranking KD
        self.rank_weights = None
        self.active = False

    def load_teacher(self, run: Run) -> None:
        if self.teacher is not None:
            return
        self.teacher = build_teacher(run, teacher_state(run, self.teacher_ticket))
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

        def loss_with_kd(interaction):
            with propagate_once(model):
                losses = base_loss(interaction)
                kd = self.weight * self.kd_loss(model, interaction)
            # RecBole sums a tuple of loss parts and logs each; KD is one more part.
            return (*losses, kd) if isinstance(losses, tuple) else losses + kd

        trainer.loss_func = loss_with_kd

    def kd_loss(self, model, interaction) -> torch.Tensor:
        users = interaction[model.USER_ID]
        if self.kd_type == "ranking":
            items = self.teacher_topk[users]
            return -(log_likes(model, users, items) * self.rank_weights).sum(1).mean()
        _, AutoEncoderMixin, *_ = _recbole_classes()
        if isinstance(model, AutoEncoderMixin):
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
        return score_kd_loss(student, teacher, self.temperature, softmax=_multinomial(model))

    def row_fields(self) -> dict:
        return {"kd_weight": self.weight if self.active else 0.0, "kd_type": self.kd_type if self.active else ""}


def install(run: Run) -> None:
    """With ``kd_weight > 0``, distil every sparse ticket of any method."""
    settings = run.settings
    if not settings.get("kd_weight"):
        return
    n_items = run.train_data.dataset.item_num
    if settings["kd_type"] == "ranking" and settings["kd_topk"] >= n_items:
        raise ConfigError("kd_topk", settings["kd_topk"], f"a whole number below the number of items ({n_items})")
    teacher_ticket = None
    if settings.get("kd_teacher"):
        teacher_state(run, None)  # a wrong file stops here, before any training
    else:
        teacher_ticket = DENSE_TICKET.get(settings["method"])
        if teacher_ticket is None:
            # The method trains no dense model of its own: train it first
            # (before any ticket, so no training is nested in another).
            dense_ticket(run)
            teacher_ticket = "dense"
    run.ticket_hooks.append(Distiller(settings, teacher_ticket))


# ------------------------------------------------------------------ checks
def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_distillation(settings: dict) -> None:
    """The KD keys, for every method."""
    weight = settings.get("kd_weight", 0)
    if not _is_number(weight) or weight < 0:
        raise ConfigError("kd_weight", weight, "a number >= 0 (0: no distillation)")
    if settings.get("kd_type", "ranking") not in KD_TYPES:
        raise ConfigError("kd_type", settings.get("kd_type"), ", ".join(KD_TYPES))
    temperature = settings.get("kd_temperature", 1.0)
    if not _is_number(temperature) or temperature <= 0:
        raise ConfigError("kd_temperature", temperature, "a number > 0")
    topk = settings.get("kd_topk", 10)
    if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
        raise ConfigError("kd_topk", topk, "a whole number >= 1")
    teacher = settings.get("kd_teacher")
    if teacher is not None and not (isinstance(teacher, str) and Path(teacher).is_file()):
        raise ConfigError(
            "kd_teacher", teacher, "null (the run's dense ticket) or the path of a recbole_lth checkpoint "
            "of the same model and dataset, e.g. <run_dir>/tickets/round_00/ticket.pt",
        )


def check_imp_kd(settings: dict) -> None:
    if settings.get("rounds") is None and settings.get("target_sparsity") is None:
        raise ConfigError("rounds", None, "a whole number >= 0 when target_sparsity is null")


def check_target_sparsities(settings: dict) -> None:
    from recbole_lth.config import check_target_sparsities as check

    check(settings)
