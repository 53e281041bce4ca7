"""Compact export of a ticket, and loading it back, compact or dense.

For every prunable tensor the export keeps, with the table's entity rows
first (an item-input ``nn.Linear`` of the autoencoders stored transposed,
one row per item; ``tables.json`` of the run says which axis):

* which rows have any active entry (1 bit per row), then for those rows only
* the mask as a bitmap (1 bit per entry, each row padded to whole bytes), and
* the values at the kept positions in row-major order: fp32 (the tensor's
  dtype), fp16, or int8 codes with a fp16 scale and offset per row.

So a table of ``n x d`` fp32 entries at sparsity ``s`` costs ``n/8 + nd/8 +
4(1-s)nd`` bytes, i.e. ``(1-s) + 1/32`` of the dense fp32 table and a little
less where whole rows are pruned (int64 CSR indices would cost more than the
dense table at 50%).  All bitmaps are concatenated into one uint8 tensor and
the values into one tensor per dtype, so the file holds a handful of tensors
whatever the model.  Parameters and buffers that are not prunable travel as
they are.

The file holds tensors and plain data only: ``torch.load(path,
weights_only=True)`` reads it.  :func:`read_export` unpacks it into a dense
``state_dict``; :func:`load_compact` builds the RecBole model with the tables
kept compact (:mod:`recbole_lth.core.compact`).  Files of the first format
(``recbole_lth.export/1``, no row bits, no value formats) are still read.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from recbole_lth import backbones, methods
from recbole_lth.backbones.base import shrunk
from recbole_lth.core import checkpoint, compact, paths
from recbole_lth.engine import builder
from recbole_lth.methods import lcm
from recbole_lth.methods.small_dense import small_sizes

FORMAT = "recbole_lth.export/2"
FORMAT_V1 = "recbole_lth.export/1"


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor -> uint8 bitmap of ``ceil(numel/8)`` bytes (row-major, MSB first)."""
    return compact.pack_rows(mask.detach().reshape(1, -1)).reshape(-1)


def unpack_bits(bitmap: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: a flat bool tensor of ``numel`` entries."""
    return compact.unpack_rows(bitmap.reshape(1, -1), numel).reshape(-1)


def table_export_bytes(numel: int, kept: int, element_size: int = 4) -> int:
    """Bytes of one packed table: its bitmap plus its kept values (row bits
    and row padding aside: at most ``rows/8 + rows`` bytes more)."""
    return -(-numel // 8) + kept * element_size


def _rows_first(tensor: torch.Tensor, axis: int) -> torch.Tensor:
    """A prunable tensor as ``[n, d]`` with its entity axis first."""
    if tensor.dim() == 1:
        return tensor.unsqueeze(0)
    if axis == 1:
        tensor = tensor.transpose(0, 1)
    return tensor.reshape(tensor.shape[0], -1)


def pack(state_dict: dict, masks: dict, meta: dict | None = None, values: str = "fp32",
         axes: dict | None = None) -> dict:
    """The export payload of ``state_dict`` with the prunable tensors in
    ``masks``; ``values``: fp32 (the tensors' own dtype), fp16 or int8;
    ``axes``: the entity axis (0 or 1) of each table, default 0."""
    if values not in compact.VALUE_FORMATS:
        raise ValueError(f"values={values!r}: allowed values are {', '.join(compact.VALUE_FORMATS)}")
    row_bits, bitmaps, scales, biases, tables = [], [], [], [], []
    stored: dict[str, list] = {}
    sizes = {"row_bits": 0, "bitmap": 0, "scale": 0}
    for name, mask in masks.items():
        weight = state_dict[name].detach().cpu()
        mask = mask.detach().cpu().to(torch.bool)
        if mask.shape != weight.shape:
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, weight {tuple(weight.shape)}")
        axis = int((axes or {}).get(name) or 0)
        rows, rows_mask = _rows_first(weight, axis), _rows_first(mask, axis)
        nonempty = rows_mask.any(dim=1)
        bitmap = compact.pack_rows(rows_mask[nonempty])
        kept = rows[rows_mask]
        scale = bias = None
        if values == "int8":
            row_of_value = torch.repeat_interleave(torch.arange(bitmap.shape[0]), rows_mask[nonempty].sum(1))
            kept, scale, bias = compact.quantise_rows(kept, row_of_value, bitmap.shape[0])
        elif values == "fp16":
            kept = kept.half()
        dtype = str(kept.dtype).removeprefix("torch.")
        start = sum(v.numel() for v in stored.get(dtype, []))
        stored.setdefault(dtype, []).append(kept)
        packed_rows = pack_bits(nonempty)
        tables.append({
            "name": name, "shape": list(weight.shape), "dtype": str(weight.dtype).removeprefix("torch."),
            "axis": axis, "rows": rows.shape[0], "width": rows.shape[1], "values": values,
            "value_dtype": dtype, "value_offset": start, "kept": kept.numel(),
            "row_bits_offset": sizes["row_bits"], "row_bits_bytes": packed_rows.numel(),
            "bitmap_offset": sizes["bitmap"], "stored_rows": bitmap.shape[0], "row_bytes": bitmap.shape[1],
            "scale_offset": sizes["scale"],
        })
        row_bits.append(packed_rows)
        bitmaps.append(bitmap.reshape(-1))
        sizes["row_bits"] += packed_rows.numel()
        sizes["bitmap"] += bitmap.numel()
        if scale is not None:
            scales.append(scale)
            biases.append(bias)
            sizes["scale"] += scale.numel()
    rest = {k: v.detach().cpu().clone() for k, v in state_dict.items() if k not in masks}

    def joined(parts, dtype):
        return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)

    return {
        "format": FORMAT,
        "meta": dict(meta or {}, values=values),
        "tables": tables,
        "row_bits": joined(row_bits, torch.uint8),
        "bitmap": joined(bitmaps, torch.uint8),
        "values": {d: torch.cat(v) for d, v in stored.items()},
        "scale": joined(scales, torch.float16),
        "bias": joined(biases, torch.float16),
        "dense": rest,
        # state_dict order, so the unpacked dict matches the model's.
        "order": list(state_dict),
    }


def _run_directory(run_dir) -> paths.RunPaths:
    """``run_dir``'s paths; a folder that is not a run directory is refused."""
    run_paths = paths.RunPaths(run_dir)
    if not run_paths.settings.is_file():
        raise FileNotFoundError(f"{run_dir} is not a recbole_lth run directory (it has no {run_paths.settings.name})")
    return run_paths


def export_ticket(run_dir, ticket: str, out=None, values: str = "fp32") -> Path:
    """Write ``run_dir/exports/<ticket>.pt`` (``<ticket>.<values>.pt`` for
    fp16/int8) as a compact export; returns its path."""
    run_paths = _run_directory(run_dir)
    source = run_paths.ticket_weights(ticket)
    if not source.is_file():
        available = run_paths.stored_tickets()
        raise FileNotFoundError(f"no ticket {ticket!r} in {run_dir} (tickets: {', '.join(available) or 'none'})")
    stored = checkpoint.load(source)
    state, masks = stored["state_dict"], stored["masks"]
    meta = {"ticket": ticket, "run_dir": str(run_dir)}
    if run_paths.ticket_result(ticket).is_file():
        row = paths.read_json(run_paths.ticket_result(ticket))
        meta.update({k: row.get(k) for k in
                     ("method", "model", "dataset", "sparsity", "target_sparsity", "prunable_params")})
        if methods.deploys(row) == "projected":  # what is deployed: the projected tables, dense
            state, masks = lcm.deployed_state(state), {}
    if run_paths.settings.is_file():
        # Enough to rebuild the RecBole model (embedding_size, layers, ...).
        meta["settings"] = paths.read_json(run_paths.settings)
    axes = {n: a[1] for n, a in paths.table_axes(run_dir).items() if a}
    out = Path(out) if out else run_paths.export(ticket, values)
    write_export(out, state, masks, meta, values=values, axes=axes)
    return out


def write_export(path, state_dict: dict, masks: dict, meta: dict | None = None, values: str = "fp32",
                 axes: dict | None = None) -> Path:
    return paths.save_tensors(path, pack(state_dict, masks, meta, values, axes))


def _payload(path, map_location="cpu") -> dict:
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, FORMAT_V1):
        raise ValueError(f"{path} is not a recbole_lth export")
    return payload


def compact_tables(payload: dict, remap="auto", chunk_rows=None) -> dict[str, compact.CompactTable]:
    """The export's prunable tables as :class:`~recbole_lth.core.compact.CompactTable`
    (views of the payload's tensors where the layouts agree)."""
    tables = {}
    for table in payload["tables"]:  # one iteration per tensor, vectorised within
        rows, width = table["rows"], table["width"]
        nonempty = unpack_bits(payload["row_bits"][table["row_bits_offset"]:][:table["row_bits_bytes"]], rows)
        bitmap = payload["bitmap"][table["bitmap_offset"]:][:table["stored_rows"] * table["row_bytes"]]
        values = payload["values"][table["value_dtype"]][table["value_offset"]:][:table["kept"]]
        scale = bias = None
        if table["values"] == "int8":
            scale = payload["scale"][table["scale_offset"]:][:table["stored_rows"]]
            bias = payload["bias"][table["scale_offset"]:][:table["stored_rows"]]
        tables[table["name"]] = compact.CompactTable.from_parts(
            (rows, width), nonempty, bitmap.view(table["stored_rows"], table["row_bytes"]), values,
            table["values"], remap, table["axis"] == 1, chunk_rows, scale, bias)
    return tables


def _read_v1(payload: dict) -> tuple[dict, dict]:
    unpacked, masks = {}, {}
    bitmap = payload["bitmap"]
    for table in payload["tables"]:
        shape = table["shape"]
        numel = 1
        for size in shape:
            numel *= size
        mask = unpack_bits(bitmap[table["byte_offset"]: table["byte_offset"] + table["bytes"]], numel)
        kept = payload["values"][table["dtype"]][table["value_offset"]: table["value_offset"] + table["kept"]]
        flat = kept.new_zeros(numel)
        flat[mask] = kept
        unpacked[table["name"]] = flat.view(shape)
        masks[table["name"]] = mask.view(shape)
    return unpacked, masks


def read_export(path, map_location="cpu") -> tuple[dict, dict, dict]:
    """``(state_dict, masks, meta)`` of an export, dense; masks are bool over
    the packed tensors; fp16/int8 values come back as fp32 (dequantised)."""
    payload = _payload(path, map_location)
    if payload["format"] == FORMAT_V1:
        unpacked, masks = _read_v1(payload)
    else:
        unpacked, masks = {}, {}
        shapes = {t["name"]: t for t in payload["tables"]}
        for name, table in compact_tables(payload, remap=False).items():
            info = shapes[name]
            dtype = getattr(torch, info["dtype"]) if info["values"] == "fp32" else torch.float32
            unpacked[name] = table.dense().to(dtype).view(info["shape"])
            masks[name] = table.mask().view(info["shape"])
    unpacked.update(payload["dense"])
    state_dict = {k: unpacked[k] for k in payload["order"]}
    return state_dict, masks, payload["meta"]


def load_export(path, map_location="cpu") -> dict:
    """The full ``state_dict`` stored in an export (pruned entries exactly zero)."""
    return read_export(path, map_location)[0]


def deployed_sizes(config, row: dict) -> dict:
    """Config values of the model a ticket deploys (``row``: its result or
    export metadata): a ``small_dense`` ticket's smaller widths, an ``lcm``
    ticket's projected width d′; nothing for a masked ticket."""
    if methods.deploys(row) == "smaller":
        return small_sizes(config, row["target_sparsity"])
    if methods.deploys(row) == "projected":
        key = lcm.support(config["model"]).width_key
        return {key: shrunk(config[key], row["target_sparsity"])}
    return {}


def compact_model(path, config, dataset, remap="auto", final_embeddings: bool = False, chunk_rows=None):
    """The export's RecBole model for ``config`` and ``dataset`` (RecBole's
    objects of the ticket's settings), its prunable tables kept compact on
    ``config["device"]``: see :func:`recbole_lth.core.compact.compact_model`."""
    scoring = backbones.require(config["model"], "compact", "compact loading")
    device = torch.device(config["device"])
    payload = _payload(path, device)
    if payload["format"] == FORMAT_V1:
        raise ValueError(f"{path} is an export of the first format; write it again with "
                         f"`run_recbole_lth.py export` to load it compact")
    tables = compact_tables(payload, remap, chunk_rows)
    with builder.config_values(config, deployed_sizes(config, payload["meta"])):
        skeleton = builder.skeleton_model(config, dataset)
    model = compact.compact_model(skeleton, tables, payload["dense"]).eval()
    scoring(model, final_embeddings)
    return model


def load_compact(path, remap="auto", final_embeddings: bool = False, chunk_rows=None, **config_overrides):
    """``(config, model, dataset, train_data, valid_data, test_data)`` as
    RecBole's ``load_data_and_model`` returns them: the ticket's data split
    (rebuilt from the settings stored in the export; never downloads) and
    its model with the prunable tables compact."""
    meta = _payload(path)["meta"]
    if "settings" not in meta:
        raise ValueError(f"{path} holds no run settings; build config and dataset yourself and call compact_model")
    settings = dict(meta["settings"], data_path=builder.resolve_data_path(meta["settings"]))
    config = builder.recbole_config(settings, Path(path).resolve().parent, **config_overrides)
    dataset, train, valid, test = builder.load_data(config, builder.eval_memory(settings))
    model = compact_model(path, config, train.dataset, remap, final_embeddings, chunk_rows)
    return config, model, dataset, train, valid, test


def evaluate_compact(path, **kwargs) -> dict:
    """The export evaluated compact through RecBole's evaluator on the test
    set: ``{"metrics": {...}, "resident_bytes": {table: bytes, "(rest)": ...}}``."""
    from recbole_lth.engine.trainer import close_tensorboard, evaluation_trainer

    config, model, _, _, _, test = load_compact(path, **kwargs)
    with tempfile.TemporaryDirectory() as scratch:  # RecBole's trainer opens a TensorBoard writer
        trainer = evaluation_trainer(config, model, tensorboard_dir=scratch)
        result = trainer.evaluate(test, load_best_model=False, show_progress=False)
        close_tensorboard(trainer)
    return {"metrics": {k: float(v) for k, v in result.items()}, "resident_bytes": compact.resident_bytes(model)}


def record_evaluation(run_dir, ticket: str, path, values: str) -> dict:
    """Evaluate an export compact and store its bytes and test metrics next
    to it (the report lists them), with the change vs the ticket's own."""
    run_paths = paths.RunPaths(run_dir)
    evaluated = evaluate_compact(path)
    row = paths.read_json(run_paths.ticket_result(ticket)) if run_paths.ticket_result(ticket).is_file() else {}
    record = {
        "ticket": ticket, "values": values, "export": str(path), "file_bytes": Path(path).stat().st_size,
        "resident_table_bytes": sum(v for k, v in evaluated["resident_bytes"].items() if k != "(rest)"),
        "resident_other_bytes": evaluated["resident_bytes"]["(rest)"],
        "dense_table_bytes": 4 * row["prunable_params"] if row.get("prunable_params") else None,
        "test": evaluated["metrics"],
        "ticket_test": {k: row.get(f"test_{k}") for k in evaluated["metrics"]},
    }
    paths.write_json(run_paths.export_evaluation(ticket, values), record)
    return record


BYTE_LAYOUTS = ("dense fp32", "bitmap+fp32", "bitmap+int8", "CSR int32", "CSR int16",
                "bitmap+fp32 remapped", "bitmap+int8 remapped")


def ticket_bytes(run_dir, ticket: str) -> dict:
    """Bytes of what a ticket deploys in every layout of
    :func:`recbole_lth.core.compact.table_layouts` (its prunable tables in that
    layout, every other tensor of the model counted once, as stored), and
    the rows left without an active entry per table.  An ``lcm`` ticket is
    its projected tables, dense (the frozen teacher table only trains it)."""
    run_paths = paths.RunPaths(run_dir)
    stored = checkpoint.load(run_paths.ticket_weights(ticket))
    state, masks = stored["state_dict"], stored["masks"]
    result = run_paths.ticket_result(ticket)
    if result.is_file() and methods.deploys(paths.read_json(result)) == "projected":
        state, masks = lcm.deployed_state(state), {}
    axes = {n: a[1] for n, a in paths.table_axes(run_dir).items() if a}
    rest = sum(v.numel() * v.element_size() for k, v in state.items() if k not in masks)
    totals: dict = {layout: rest for layout in BYTE_LAYOUTS}
    empty = {}
    for name, mask in masks.items():
        layouts = compact.table_layouts(mask, axes.get(name, 0))
        for layout in BYTE_LAYOUTS:
            totals[layout] = None if totals[layout] is None or layouts[layout] is None \
                else totals[layout] + layouts[layout]
        empty[name] = (layouts["empty rows"], layouts["rows"])
    return {"layouts": totals, "empty_rows": empty, "other_bytes": rest}


# ------------------------------------------------------ RecBole's own format
_LEARNERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
             "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop}


def deployed_model(run_dir, ticket: str):
    """``(config, model)``: RecBole's config and model of a ticket as RecBole
    builds them (the run's settings, same seed and split), holding the ticket's
    weights (pruned entries exactly zero).  A baseline is its own, smaller
    model: ``small_dense`` with its widths; ``lcm`` as what is deployed, the
    projected tables E = E_teacher·W + b at width d′ (the frozen teacher table
    is a training device, not part of the model)."""
    run_paths = _run_directory(run_dir)
    if not run_paths.ticket_result(ticket).is_file():
        raise FileNotFoundError(f"no finished ticket {ticket!r} in {run_dir} "
                                f"(tickets: {', '.join(run_paths.stored_tickets()) or 'none'})")
    settings = paths.read_json(run_paths.settings)
    row = paths.read_json(run_paths.ticket_result(ticket))
    state = dict(checkpoint.load(run_paths.ticket_weights(ticket))["state_dict"])
    settings = dict(settings, data_path=builder.resolve_data_path(settings))
    config = builder.recbole_config(settings, run_paths.root)
    _, train, _, _ = builder.load_data(config, builder.eval_memory(settings))
    if methods.deploys(row) == "projected":
        state = lcm.deployed_state(state)
    for key, value in deployed_sizes(config, row).items():
        config[key] = value
    model = builder.new_model(config, train.dataset)
    model.load_state_dict(state)
    return config, model


def export_recbole(run_dir, ticket: str, out) -> Path:
    """The ticket as RecBole's trainer saves a model, so that
    ``recbole.quick_start.load_data_and_model(out)`` opens it (with
    ``import recbole_lth`` first on torch >= 2.6: its compatibility module
    allowlists RecBole's checkpoint types).  This is an interchange format:
    like every RecBole checkpoint it pickles RecBole's ``Config`` (our own
    files never do)."""
    config, model = deployed_model(run_dir, ticket)
    row = paths.read_json(paths.RunPaths(run_dir).ticket_result(ticket))
    learner = _LEARNERS.get(str(config["learner"]).lower(), torch.optim.Adam)
    state = {
        "config": config,
        "epoch": row.get("best_epoch"),
        "cur_step": 0,
        "best_valid_score": row.get(f"valid_{str(config['valid_metric']).lower()}"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "other_parameter": model.other_parameter(),
        "optimizer": learner(model.parameters(), lr=config["learning_rate"]).state_dict(),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # torch.save's default protocol, not the 4 RecBole's trainer uses: torch's
    # weights-only loader (torch >= 2.6's default) cannot read protocol 4 at all.
    torch.save(state, out)
    return out
