"""Training interactions per user and item (a CTR model: per feature), and kept dimensions per popularity bucket.

The counts are stored once per run at prepare time (``popularity.pt``, a
bincount of the training split: the valid/test interactions are never
counted), so the report needs no dataset.
"""
from __future__ import annotations

import torch

from recbole_lth.core import checkpoint, paths, tasks
from recbole_lth.core.masking import entity_axis
from recbole_lth.engine import builder


def interaction_counts(train_dataset, model=None) -> dict[str, torch.Tensor]:
    """Training interactions per user id and per item id (index = RecBole's id,
    i.e. the row of the embedding table; id 0 is RecBole's padding); for a
    context-aware model, training rows per feature, in its token table's row
    order (each field's values at the field's offset)."""
    if model is not None and tasks.of_model(model).name == "context":
        fields = {f"field:{name}": torch.tensor([offset, dim]) for name, offset, dim in tasks.token_fields(model)}
        return {"feature": feature_counts(train_dataset, model), **fields}
    inter = train_dataset.inter_feat
    users = torch.as_tensor(inter[train_dataset.uid_field]).long()
    items = torch.as_tensor(inter[train_dataset.iid_field]).long()
    return {
        "user": torch.bincount(users, minlength=train_dataset.user_num),
        "item": torch.bincount(items, minlength=train_dataset.item_num),
    }


def feature_counts(train_dataset, model) -> torch.Tensor:
    """Training rows per feature of a context-aware model's shared token
    table; the user and item fields are joined in as RecBole joins them for a batch."""
    fields = tasks.token_fields(model)
    counts = torch.zeros(sum(d for _, _, d in fields), dtype=torch.long)
    inter = train_dataset.join(train_dataset.inter_feat)
    for name, offset, dim in fields:
        if name in inter.columns:
            values = torch.as_tensor(inter[name]).long().flatten()
            counts[offset:offset + dim] = torch.bincount(values.clamp(0, dim - 1), minlength=dim)
    return counts


def save_popularity(run_paths: paths.RunPaths, train_dataset, model=None) -> None:
    if not run_paths.popularity.exists():
        checkpoint.save(run_paths.popularity, state_dict=interaction_counts(train_dataset, model),
                        meta={"source": "training split"})


def load_popularity(run_dir) -> dict:
    """The stored counts; a run directory without them is rebuilt from its
    settings (same seed, same split)."""
    run_paths = paths.RunPaths(run_dir)
    if not run_paths.popularity.is_file():
        save_popularity(run_paths, *builder.rebuild(paths.read_json(run_paths.settings), run_dir))
    return checkpoint.load(run_paths.popularity)["state_dict"]


def field_ranges(counts: dict) -> list[tuple[str, int, int]]:
    """A CTR token table's fields, ``(name, first row, rows)``, as stored beside the feature counts."""
    return [(k.removeprefix("field:"), int(v[0]), int(v[1])) for k, v in counts.items() if k.startswith("field:")]


def _buckets(tensor: str, side: str, kept, popularity, width: int, buckets: int) -> list[dict]:
    """Entities sorted by popularity in ``buckets`` equal groups, bucket 1 the least popular."""
    order = torch.argsort(popularity, stable=True)
    return [{
        "tensor": tensor, "side": side, "bucket": b, "width": width, "entities": chunk.numel(),
        "min_inter": int(popularity[chunk].min()), "max_inter": int(popularity[chunk].max()),
        "mean_kept": float(kept[chunk].float().mean()), "kept_fraction": float(kept[chunk].float().mean()) / width,
    } for b, chunk in enumerate(torch.tensor_split(order, min(buckets, order.numel())), start=1)]


def embedding_size_buckets(masks: dict, counts: dict, buckets: int = 5, axes: dict | None = None
                           ) -> tuple[list[dict], list[str]]:
    """Per tensor and popularity bucket: entities, interaction range, mean kept dims.

    Entities (padding id 0 excluded) are sorted by training interactions and
    split into ``buckets`` groups of equal size; bucket 1 is the least popular.
    A CTR token table is bucketed field by field (each field's padding row
    excluded): a feature's popularity only means something beside its field's.
    ``axes``: the run's stored table axes; without them the sizes decide."""
    records, notes = [], []
    sizes = {side: c.numel() for side, c in counts.items() if ":" not in side}
    fields = field_ranges(counts)
    for name, mask in masks.items():
        shape = tuple(mask.shape)
        where = (axes or {}).get(name) if axes and name in axes else entity_axis(name, shape, sizes)
        if where is None or where[0] not in sizes:
            notes.append(f"`{name}` {shape}: neither side is a {' or '.join(sizes)} count, skipped")
            continue
        side, axis = where
        kept_all = mask.sum(dim=1 - axis)  # kept dimensions per entity
        width = mask.shape[1 - axis]
        if side == "feature" and fields:
            for field, offset, dim in fields:
                rows = slice(offset + 1, offset + dim)  # the field's padding row dropped
                if dim > 1:
                    records += _buckets(name, field, kept_all[rows], counts[side][rows], width, buckets)
            continue
        if axis == 1:
            notes.append(f"`{name}` {shape}: column j is {side} j (an input layer over {side}s)")
        elif "embedding" not in name.lower():
            notes.append(f"`{name}` {shape}: row j is {side} j")
        records += _buckets(name, side, kept_all[1:], counts[side][1:], width, buckets)
    return records, notes
