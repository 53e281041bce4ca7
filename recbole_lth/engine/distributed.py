"""Several processes, one search: RecBole's torch.distributed path.

``--nproc=N`` launches N processes (``torch.multiprocessing.spawn``, as
RecBole's ``run_recboles`` does, without importing ``recbole.quick_start``).
Each joins one process group, gloo on the CPU and NCCL on GPUs (the
compatibility module lets RecBole's ``Config`` choose, see ``compat.py``
patch 7), and runs the same search: RecBole's trainer wraps the model in
``DistributedDataParallel``, its data loaders shard the batches, its
evaluator all-gathers the ranks' metrics.  The plugin's part:

* the RecBole keys of the group (``local_rank``, ``world_size``, ``nproc``,
  ``offset``, ``ip``, ``port``) go to every ``Config`` built in the process
  (:func:`recbole_keys`); they are where-it-ran keys, so a run directory is
  the same whatever the number of processes, and resumes with any;
* masks are computed on every rank from the same synchronised weights and
  gradients (DDP all-reduces gradients before the optimizer step, where the
  mask core reads them), and after every ticket :func:`check_identical`
  compares a digest of the masks across ranks and stops the run if they
  differ;
* only rank 0 writes the run directory: the other ranks run in a private
  copy of it (:func:`private_copy`), so they skip exactly the tickets rank 0
  skips and never touch its files.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from recbole_lth.core import paths


@dataclass(frozen=True)
class Group:
    rank: int
    world_size: int
    port: int
    ip: str = "127.0.0.1"


_GROUP: Group | None = None


class RanksDisagree(RuntimeError):
    """The ranks of a distributed run computed different masks."""

    exit_code = 1


def join(group: Group) -> None:
    """This process is ``group.rank`` of a launched run (the process group
    itself is created by RecBole's ``Config``, on the first one built)."""
    global _GROUP
    _GROUP = group


def active() -> bool:
    return _GROUP is not None


def rank() -> int:
    return _GROUP.rank if _GROUP else 0


def world_size() -> int:
    return _GROUP.world_size if _GROUP else 1


def is_main() -> bool:
    return rank() == 0


def recbole_keys() -> dict:
    """RecBole's distributed keys for this process (none outside a launch)."""
    if _GROUP is None:
        return {}
    return {"local_rank": _GROUP.rank, "world_size": _GROUP.world_size, "nproc": _GROUP.world_size,
            "offset": 0, "ip": _GROUP.ip, "port": _GROUP.port}


def describe() -> str:
    """One line for the run's log."""
    backend = dist.get_backend() if dist.is_initialized() else "no process group yet"
    return f"distributed run: rank {rank()} of {world_size()} processes ({backend}); rank 0 writes the run directory"


def barrier() -> None:
    if _GROUP is not None and dist.is_initialized():
        dist.barrier()


def private_copy(run_dir: Path) -> Path:
    """Rank > 0's own copy of ``run_dir`` as it is now (finished tickets,
    saved states), in the system's temporary folder."""
    scratch = Path(tempfile.mkdtemp(prefix=f"recbole_lth-rank{rank()}-"))
    if Path(run_dir).is_dir():
        source = paths.RunPaths(run_dir)
        ignore = shutil.ignore_patterns(source.lock.name, source.log.name, source.tensorboard.name)
        shutil.copytree(run_dir, scratch / "run", ignore=ignore)
    return scratch / "run"


def average(tensors: dict) -> dict:
    """``tensors`` averaged over the ranks (as DDP averages gradients), for
    statistics a method gathers outside RecBole's training loop, where each
    rank saw only its shard of the batches (SNIP's initial gradients)."""
    if _GROUP is None or not dist.is_initialized():
        return tensors
    out = {}
    for name, tensor in tensors.items():
        reduced = tensor.detach().clone()
        dist.all_reduce(reduced)
        out[name] = reduced / world_size()
    return out


def mask_digest(masks: dict) -> torch.Tensor:
    """A position-sensitive checksum of a set of masks (int64, on their
    device): any flipped entry changes it."""
    total = None
    for index, name in enumerate(sorted(masks)):
        flat = masks[name].reshape(-1).to(torch.int64)
        weights = torch.arange(1, flat.numel() + 1, device=flat.device, dtype=torch.int64) % 1_000_003
        part = (flat * weights).sum() * (index + 1) + flat.sum() * 7_919
        total = part if total is None else total + part
    return total if total is not None else torch.zeros((), dtype=torch.int64)


def check_identical(masks: dict, what: str) -> int | None:
    """All-gather the masks' digest; raises :class:`RanksDisagree` on every
    rank when any rank's masks differ.  Returns the digest (None outside a
    distributed run)."""
    if _GROUP is None or not dist.is_initialized():
        return None
    digest = mask_digest(masks).reshape(1)
    if dist.get_backend() == "nccl":
        digest = digest.cuda()
    gathered = [torch.zeros_like(digest) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, digest)
    values = [int(g.item()) for g in gathered]
    if len(set(values)) != 1:
        raise RanksDisagree(f"the masks of {what} differ between ranks (digests {values}); the run stops, "
                            f"finished tickets are kept")
    return values[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(nproc: int, target, args: tuple) -> None:
    """Run ``target(*args)`` in ``nproc`` processes, each :func:`join` ed to
    its rank, and wait.  A process that fails stops the others (torch's
    ``spawn`` terminates them) and this raises
    :class:`~recbole_lth.core.errors.RankFailed` with the first failing rank's
    one-line message and exit code (an exception's ``exit_code``, else 1)."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    from recbole_lth.core.errors import RankFailed

    port = free_port()
    threads = max(1, (os.cpu_count() or 1) // nproc)  # the ranks share the machine's cores
    failures = mp.get_context("spawn").SimpleQueue()
    try:
        mp.spawn(_entry, args=(nproc, port, threads, failures, target, args), nprocs=nproc, join=True)
    except ProcessException as err:
        if failures.empty():
            raise RankFailed(1, f"a process of the run failed: {err}") from None
        code, message = failures.get()
        raise RankFailed(code, message) from None


def _entry(rank_index: int, nproc: int, port: int, threads: int, failures, target, args: tuple) -> None:
    import sys
    import traceback

    torch.set_num_threads(threads)
    join(Group(rank_index, nproc, port))
    try:
        target(*args)
    except BaseException as err:  # noqa: BLE001 - every failure becomes one line and an exit code
        code = getattr(err, "exit_code", None)
        if code is None:  # not one of ours: the rank's traceback helps
            traceback.print_exc()
            code, message = 1, f"rank {rank_index}: {type(err).__name__}: {err}"
        else:
            message = str(err)
        failures.put((code, message))
        sys.exit(code)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
