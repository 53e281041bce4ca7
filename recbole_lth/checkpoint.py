"""Our own files: tensors and plain data only, loadable with weights_only=True.

Writes go to a temporary file first and are renamed into place, so an
interrupted run never leaves a half-written checkpoint behind.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

FORMAT = "recbole_lth/1"


def _cpu(tensors: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in tensors.items()}


def save(path, *, state_dict=None, masks=None, meta=None) -> None:
    payload = {"format": FORMAT, "meta": dict(meta or {})}
    if state_dict is not None:
        payload["state_dict"] = _cpu(state_dict)
    if masks is not None:
        payload["masks"] = _cpu(masks)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(path, map_location="cpu") -> dict:
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a recbole_lth checkpoint (format {payload.get('format')!r})")
    return payload


def write_json(path, data) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False))
    os.replace(tmp, path)


def read_json(path):
    return json.loads(Path(path).read_text())
