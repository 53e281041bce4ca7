"""RecBole's full-sort evaluation without its per-batch host work.

RecBole's ``FullSortEvalDataLoader`` builds every batch's history and
positive index tensors in Python (``collate_fn``), and its ``Collector`` finds
which of the top-K items are positives through a users x items int matrix that
it zero-fills and sums row by row: on yelp2018 (38k items) that sum alone costs
twice the scoring.  Here the index tensors are built once per loader, on the
model's device, and the Collector's ``rec.topk`` rows (a hit flag per top-K
item, then the user's number of positives) come from a sorted lookup of the K
items.  RecBole still scores and masks each batch (its trainer's full-sort
batch scoring, which the trainer adapter, :mod:`recbole_lth.engine.trainer`,
exposes as ``full_sort_scores``) and its ``Evaluator`` computes every metric
from the same ``DataStruct``.

Anything else (sampled evaluation, sequential models, distributed runs,
metrics that need every score, a trainer with its own ``evaluate``) goes to
RecBole's ``evaluate`` unchanged.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

# The Collector's per-batch keys this path produces; a metric needing any
# other (GAUC's rec.meanrank, AUC's rec.score, ...) takes RecBole's path.
OWN_KEYS = ("rec.items", "rec.topk")
OTHER_BATCH_KEYS = ("rec.meanrank", "rec.score", "data.label")


@dataclass
class FullSortIndex:
    """One full-sort loader's users, batches and positives, on one device.

    ``history[b]``: batch ``b``'s (row, item) pairs that RecBole sets to -inf;
    ``positive_keys``: sorted ``row * n_items + item`` of every positive, rows
    counted over the whole loader; ``positive_counts``: ``(users, 1)``."""

    users: object  # RecBole's Interaction of the loader's users, on the device
    step: int  # users per batch: the torch DataLoader's batch_size, which batches RecBole's iteration
    n_items: int
    history: list
    positive_keys: torch.Tensor
    positive_counts: torch.Tensor

    def batches(self):
        """``(first row, users' Interaction, history index)`` per batch, as RecBole's loader batches them."""
        for b, history in enumerate(self.history):
            start = b * self.step
            yield start, self.users[start:start + self.step], history


def concatenated(per_user, uids):
    """RecBole's per-user item tensors (``uid2history_item``,
    ``uid2positive_item``) for ``uids``, one after another: ``(rows, items,
    lengths)``, a row being the user's position in ``uids``."""
    lists = list(per_user[uids])
    lengths = torch.tensor([len(items) for items in lists], dtype=torch.int64)
    rows = torch.repeat_interleave(torch.arange(len(lists)), lengths)
    return rows, torch.cat(lists).to(torch.int64), lengths


def history_batches(loader, uids, device) -> list:
    """Each batch's history index, rows counted from the batch's first user."""
    rows, items, lengths = concatenated(loader.uid2history_item, uids)
    sizes = [int(chunk.sum()) for chunk in lengths.split(loader.batch_size)]
    local = (rows % loader.batch_size).to(device)
    return list(zip(local.split(sizes), items.to(device).split(sizes)))


def build_index(loader, device) -> FullSortIndex:
    """From what RecBole's loader keeps per user (its users' Interaction,
    each user's history and positive items), read once."""
    users = loader.user_df
    uids = users[loader.uid_field].numpy()
    n_items = loader.dataset.item_num
    rows, items, counts = concatenated(loader.uid2positive_item, uids)
    keys, _ = torch.sort(rows * n_items + items)
    return FullSortIndex(
        users=users.to(device), step=loader.batch_size, n_items=n_items,
        history=history_batches(loader, uids, device),
        positive_keys=keys.to(device), positive_counts=counts.unsqueeze(1).to(device),
    )


# A loader is evaluated every epoch and by every ticket's trainer: its index is
# built once, and goes with the loader.
_INDEXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def index_for(loader, device) -> FullSortIndex:
    built = _INDEXES.setdefault(loader, {})
    key = (str(device), loader.batch_size)
    if key not in built:
        built[key] = build_index(loader, device)
    return built[key]


def topk_rows(index: FullSortIndex, top: torch.Tensor, start: int) -> torch.Tensor:
    """RecBole's ``rec.topk`` rows for the users from ``start``: whether each
    of their top-K items is a positive (int32, as the Collector's gather from
    its int matrix), then their number of positives (int64, as its sum)."""
    rows = torch.arange(start, start + len(top), device=top.device).unsqueeze(1)
    keys = rows * index.n_items + top
    found = torch.searchsorted(index.positive_keys, keys).clamp_(max=len(index.positive_keys) - 1)
    hits = (index.positive_keys[found] == keys).int()
    return torch.cat((hits, index.positive_counts[start:start + len(top)]), dim=1)


def applies(trainer, eval_data, base_evaluate) -> bool:
    """Whether this path gives what RecBole's ``evaluate`` would."""
    from recbole.data.dataloader import FullSortEvalDataLoader
    from recbole.trainer import Trainer
    from recbole.utils import EvaluatorType

    register = trainer.eval_collector.register
    return (
        isinstance(eval_data, FullSortEvalDataLoader) and len(eval_data) > 0
        and not eval_data.is_sequential and trainer.config["single_spec"]
        and trainer.config["eval_type"] == EvaluatorType.RANKING
        and getattr(base_evaluate, "__func__", None) is Trainer.evaluate
        and not any(register.need(key) for key in OTHER_BATCH_KEYS)
    )


def collect(trainer, index: FullSortIndex, batches) -> None:
    """Score every batch with RecBole's full-sort batch scoring
    (``trainer.full_sort_scores``) and hand the Collector its ``rec.items`` /
    ``rec.topk`` (one tensor each: the same rows as its per-batch concatenation)."""
    collector = trainer.eval_collector
    k = max(collector.topk)
    tops, rows = [], []
    for start, users, history in batches:
        # RecBole's own scoring and -inf writes (a model without full_sort_predict included).
        scores = trainer.full_sort_scores(users, history)
        top = torch.topk(scores, k, dim=-1)[1]
        tops.append(top)
        rows.append(topk_rows(index, top, start))
    for key, parts in zip(OWN_KEYS, (tops, rows)):
        if collector.register.need(key):
            collector.data_struct.update_tensor(key, torch.cat(parts))


def with_progress_bar(index: FullSortIndex, show: bool):
    if not show:
        return index.batches()
    from recbole.utils import set_color
    from tqdm import tqdm

    return tqdm(index.batches(), total=len(index.history), ncols=100, desc=set_color("Evaluate   ", "pink"))


def prepare_trainer(trainer, eval_data) -> None:
    """What RecBole's ``evaluate`` sets before scoring: the items a model
    without ``full_sort_predict`` is scored on, and their number."""
    if trainer.item_tensor is None:
        trainer.item_tensor = eval_data.dataset.get_item_feature().to(trainer.device)
    trainer.tot_item_num = eval_data.dataset.item_num


class FullSortEvaluation:
    """Trainer mixin: RecBole's ``evaluate``, with the full-sort path's
    per-batch host work done once per loader (see the module's docstring);
    the trainer class provides ``full_sort_scores(users, history)``."""

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        base_evaluate = super().evaluate
        if load_best_model or not applies(self, eval_data, base_evaluate):
            return base_evaluate(eval_data, load_best_model, model_file, show_progress)
        self.model.eval()
        prepare_trainer(self, eval_data)
        index = index_for(eval_data, self.device)
        collect(self, index, with_progress_bar(index, show_progress))
        self.eval_collector.model_collect(self.model)
        result = self.evaluator.evaluate(self.eval_collector.get_data_struct())
        self.wandblogger.log_eval_metrics(result, head="eval")
        return result
