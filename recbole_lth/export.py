"""Compact export of a ticket: a bitmap plus the packed surviving values.

For every prunable tensor the export keeps

* its mask as a bitmap (1 bit per entry, row-major, packed 8 to a byte), and
* the values at the kept positions, in row-major order, in the tensor's dtype,

so a table of ``n`` fp32 entries at sparsity ``s`` costs ``n/8 + 4(1-s)n``
bytes, i.e. ``(1-s) + 1/32`` of the dense fp32 table (int64 CSR indices
would cost more than the dense table at 50%).  All bitmaps are concatenated
into one uint8 tensor and all values into one tensor per dtype, so the file
holds a handful of tensors whatever the model (few zip records, little
overhead).  Parameters and buffers that are not prunable travel as they are.

The file holds tensors and plain data only: ``torch.load(path,
weights_only=True)`` reads it.  :func:`load_export` unpacks it with
vectorised torch ops into a ``state_dict`` for the RecBole model.
"""
from __future__ import annotations

from pathlib import Path

import torch

from recbole_lth import builder, checkpoint, paths
from recbole_lth.budget import shrunk
from recbole_lth.methods import lcm
from recbole_lth.methods.small_dense import small_sizes

FORMAT = "recbole_lth.export/1"
_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor -> uint8 bitmap of ``ceil(numel/8)`` bytes (row-major, MSB first)."""
    flat = mask.detach().reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8) * _BIT_WEIGHTS.to(flat.device)).sum(dim=1, dtype=torch.uint8)


def unpack_bits(bitmap: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: a flat bool tensor of ``numel`` entries."""
    bits = (bitmap.view(-1, 1) & _BIT_WEIGHTS.to(bitmap.device).view(1, 8)) != 0
    return bits.reshape(-1)[:numel]


def table_export_bytes(numel: int, kept: int, element_size: int = 4) -> int:
    """Bytes of one packed table: its bitmap plus its kept values."""
    return -(-numel // 8) + kept * element_size


def pack(state_dict: dict, masks: dict, meta: dict | None = None) -> dict:
    """The export payload of ``state_dict`` with the prunable tensors in ``masks``."""
    bitmaps, values, tables = [], {}, []
    byte_offset = 0
    value_offsets: dict[str, int] = {}
    for name, mask in masks.items():
        weight = state_dict[name].detach().cpu()
        mask = mask.detach().cpu().to(torch.bool)
        if mask.shape != weight.shape:
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, weight {tuple(weight.shape)}")
        bitmap = pack_bits(mask)
        kept = weight.reshape(-1)[mask.reshape(-1)]
        dtype = str(weight.dtype).removeprefix("torch.")
        start = value_offsets.get(dtype, 0)
        values.setdefault(dtype, []).append(kept)
        value_offsets[dtype] = start + kept.numel()
        tables.append({
            "name": name, "shape": list(weight.shape), "dtype": dtype,
            "byte_offset": byte_offset, "bytes": bitmap.numel(),
            "value_offset": start, "kept": kept.numel(),
        })
        bitmaps.append(bitmap)
        byte_offset += bitmap.numel()
    rest = {k: v.detach().cpu().clone() for k, v in state_dict.items() if k not in masks}
    return {
        "format": FORMAT,
        "meta": dict(meta or {}),
        "tables": tables,
        "bitmap": torch.cat(bitmaps) if bitmaps else torch.zeros(0, dtype=torch.uint8),
        "values": {d: torch.cat(v) for d, v in values.items()},
        "dense": rest,
        # state_dict order, so the unpacked dict matches the model's.
        "order": list(state_dict),
    }


def export_ticket(run_dir, ticket: str, out=None) -> Path:
    """Write ``run_dir/tickets/<ticket>/ticket.pt`` as a compact export; returns its path."""
    run_paths = paths.RunPaths(run_dir)
    source = run_paths.ticket_weights(ticket)
    if not source.is_file():
        available = run_paths.stored_tickets()
        raise FileNotFoundError(f"no ticket {ticket!r} in {run_dir} (tickets: {', '.join(available) or 'none'})")
    stored = checkpoint.load(source)
    state, masks = stored["state_dict"], stored["masks"]
    meta = {"ticket": ticket, "run_dir": str(run_dir)}
    if run_paths.ticket_result(ticket).is_file():
        row = paths.read_json(run_paths.ticket_result(ticket))
        meta.update({k: row.get(k) for k in ("method", "model", "dataset", "sparsity", "prunable_params")})
        if row.get("method") == "lcm":  # what is deployed: the projected tables, dense
            state, masks = lcm.deployed_state(state), {}
    if run_paths.settings.is_file():
        # Enough to rebuild the RecBole model (embedding_size, layers, ...).
        meta["settings"] = paths.read_json(run_paths.settings)
    out = Path(out) if out else run_paths.export(ticket)
    write_export(out, state, masks, meta)
    return out


def write_export(path, state_dict: dict, masks: dict, meta: dict | None = None) -> Path:
    return paths.save_tensors(path, pack(state_dict, masks, meta))


def read_export(path, map_location="cpu") -> tuple[dict, dict, dict]:
    """``(state_dict, masks, meta)`` of an export; masks are bool over the packed tensors."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a recbole_lth export")
    unpacked, masks = {}, {}
    bitmap = payload["bitmap"]
    for table in payload["tables"]:  # one iteration per tensor, vectorised within
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
    unpacked.update(payload["dense"])
    state_dict = {k: unpacked[k] for k in payload["order"]}
    return state_dict, masks, payload["meta"]


def load_export(path, map_location="cpu") -> dict:
    """The full ``state_dict`` stored in an export (pruned entries exactly zero)."""
    return read_export(path, map_location)[0]


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
    run_paths = paths.RunPaths(run_dir)
    if not run_paths.ticket_result(ticket).is_file():
        raise FileNotFoundError(f"no finished ticket {ticket!r} in {run_dir} "
                                f"(tickets: {', '.join(run_paths.stored_tickets()) or 'none'})")
    settings = paths.read_json(run_paths.settings)
    row = paths.read_json(run_paths.ticket_result(ticket))
    state = dict(checkpoint.load(run_paths.ticket_weights(ticket))["state_dict"])
    settings = dict(settings, data_path=builder.resolve_data_path(settings))
    config = builder.recbole_config(settings, run_paths.root)
    _, train, _, _ = builder.load_data(config, builder.eval_memory(settings))
    sizes = {}
    if row.get("method") == "small_dense":
        sizes = small_sizes(config, row["target_sparsity"])
    elif row.get("method") == "lcm":
        sizes = {"embedding_size": shrunk(config["embedding_size"], row["target_sparsity"])}
        state = lcm.deployed_state(state)
    for key, value in sizes.items():
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
