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

from recbole_lth import checkpoint, paths

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
    meta = {"ticket": ticket, "run_dir": str(run_dir)}
    if run_paths.ticket_result(ticket).is_file():
        row = paths.read_json(run_paths.ticket_result(ticket))
        meta.update({k: row.get(k) for k in ("method", "model", "dataset", "sparsity")})
    if run_paths.settings.is_file():
        # Enough to rebuild the RecBole model (embedding_size, layers, ...).
        meta["settings"] = paths.read_json(run_paths.settings)
    out = Path(out) if out else run_paths.export(ticket)
    write_export(out, stored["state_dict"], stored["masks"], meta)
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
