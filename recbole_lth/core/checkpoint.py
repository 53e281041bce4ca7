"""Our checkpoints: tensors and plain data only, loadable with ``weights_only=True``.

RecBole pickles its ``Config`` into every checkpoint it writes; ours never
hold anything but tensors, numbers, strings, lists and dicts, so opening one
can never run code.
"""
from __future__ import annotations

import torch

from recbole_lth.core import paths

FORMAT = "recbole_lth/1"


class CorruptCheckpoint(ValueError):
    """A file of ours that cannot be read (truncated, or not ours)."""


def _cpu(tensors: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in tensors.items()}


def save(path, *, state_dict=None, masks=None, meta=None) -> None:
    payload = {"format": FORMAT, "meta": dict(meta or {})}
    if state_dict is not None:
        payload["state_dict"] = _cpu(state_dict)
    if masks is not None:
        payload["masks"] = _cpu(masks)
    paths.save_tensors(path, payload)


def load(path, map_location="cpu") -> dict:
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # truncated zip, foreign pickle, ...
        raise CorruptCheckpoint(f"{path} cannot be read ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CorruptCheckpoint(f"{path} is not a recbole_lth checkpoint (format {found!r})")
    return payload
