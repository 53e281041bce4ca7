"""Independent tickets at once: per-ticket claims, the workers' loop, and two executors.

``workers: N`` starts N workers that all run the *same* plans over the same
run directories.  A worker trains a ticket only after claiming it (an OS lock
in ``claims/<ticket>.lock`` that a killed process releases); a ticket claimed
by another worker comes back as a :class:`PendingTicket`, and only reading
its weights (``omp`` reading the dense model, IMP's next round) raises
:class:`TicketPending`: the worker then sets that unit of work (a seed's
method) aside, goes on with another, and comes back to it later.  Each
ticket is a function of (start state, mask, settings), reseeded when it
starts, so which worker trains it changes nothing; the driver then runs the
plans once more in its own process, which loads every ticket (nothing left
to train) and writes ``results.csv`` and the reports exactly as a
sequential run does.

Executors: ``local`` (worker processes of this machine, ``spawn``ed, each
killed with its parent) and ``ray`` (Ray tasks; the run directories must be
on a filesystem every node sees, with working ``flock``).
"""
from __future__ import annotations

import logging
import os
import socket
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from recbole_lth.core.errors import ConfigError, RankFailed

logger = logging.getLogger("recbole_lth")


# ------------------------------------------------------------------ claims
class TicketPending(Exception):
    """A ticket (or search) another worker is training was needed now."""

    def __init__(self, key: str, lock_path: Path):
        self.key, self.lock_path = key, Path(lock_path)
        super().__init__(f"{key} is being trained by another worker")

    def wait(self) -> None:
        """Until the worker holding the claim releases it (done, or killed)."""
        from filelock import FileLock

        with FileLock(self.lock_path):
            pass


class PendingTicket:
    """What ``Run.ticket`` returns for a ticket another worker has claimed:
    a plan may go on past it, but reading it raises :class:`TicketPending`."""

    def __init__(self, key: str, lock_path: Path):
        self.key, self.lock_path = key, lock_path

    def _pending(self):
        raise TicketPending(self.key, self.lock_path)

    row = property(lambda self: self._pending())
    state_dict = property(lambda self: self._pending())
    masks = property(lambda self: self._pending())

    def prunable_weights(self, names, device):
        self._pending()

    def device_masks(self, device):
        self._pending()


class Claims:
    """A worker's claims: at most one held at a time (the ticket it trains)."""

    def __init__(self):
        self.trained = 0  # tickets and searches this worker finished

    @contextmanager
    def claim(self, key: str, lock_path: Path):
        """Yields True when this worker holds ``key`` (until the block ends),
        False when another worker does."""
        from filelock import FileLock, Timeout

        Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(lock_path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()


@contextmanager
def no_claims():
    """The sequential case: every ticket is this process's."""
    yield True


# ------------------------------------------------------------- the loop
def run_units(units: list, run_unit: Callable, claims: Claims) -> None:
    """Run every unit; a unit that needs a ticket another worker trains is
    set aside and retried.  When a whole pass only set units aside, the
    worker waits for the first ticket it needed."""
    queue = deque(units)
    while queue:
        before, pending = claims.trained, []
        for _ in range(len(queue)):
            unit = queue.popleft()
            try:
                run_unit(unit)
            except TicketPending as waiting:
                queue.append(unit)
                pending.append(waiting)
        if queue and len(pending) == len(queue) and claims.trained == before:
            logger.info(f"worker {os.getpid()}: waiting for {pending[0].key}")
            pending[0].wait()


def rotated(units: list, index: int, workers: int) -> list:
    """Worker ``index`` starts at its own share of the units, so that N
    workers begin on N different parts of the study."""
    start = (index * len(units)) // max(1, workers)
    return units[start:] + units[:start]


def threads_per_worker(workers: int, worker_threads: int | None) -> int:
    return worker_threads or max(1, (os.cpu_count() or 1) // workers)


# -------------------------------------------------------------- checks
def gpu_ids(settings: dict) -> list[str]:
    """The GPUs a run may use (``gpu_id`` when CUDA is there and ``use_gpu``)."""
    import torch

    if not (settings.get("use_gpu", True) and torch.cuda.is_available()):
        return []
    given = settings.get("gpu_id")
    ids = [s.strip() for s in str(given).split(",") if s.strip()] if given not in (None, "") else []
    return ids or [str(i) for i in range(torch.cuda.device_count())]


# Above this many local workers per core a study only thrashes (a million were
# once asked for: hundreds of interpreters, memory exhausted; issue 35).
WORKERS_PER_CORE = 4


def check(settings: dict, hooks: tuple = ()) -> list[str]:
    """How ``workers``, ``executor``, ``nproc`` and ``tune`` combine; returns
    warnings for the run's log."""
    workers, executor = settings.get("workers", 1), settings.get("executor", "local")
    parallel = workers > 1 or executor == "ray"
    if parallel and settings.get("nproc") is not None:
        raise ConfigError("nproc", settings["nproc"], "nothing with workers > 1 or executor ray (a ticket trains "
                          "in one worker; nproc splits one ticket's batches: choose one)")
    if executor == "ray" and hooks:
        raise ConfigError("executor", executor, "local under tune (trials run in one process)")
    if parallel and hooks:
        raise ConfigError("workers", workers, "1 under tune (trials run in one process)")
    if executor != "ray" and settings.get("ray_address"):
        raise ConfigError("ray_address", settings["ray_address"], "null unless executor is ray")
    notices = []
    gpus = gpu_ids(settings)
    if executor == "local" and gpus and workers > len(gpus):
        raise ConfigError("workers", workers, f"at most {len(gpus)}, one worker per GPU of gpu_id")
    cores = os.cpu_count() or 1
    if executor == "local" and workers > WORKERS_PER_CORE * cores:
        raise ConfigError("workers", workers, f"a whole number up to {WORKERS_PER_CORE * cores} ({WORKERS_PER_CORE} "
                                              f"per core of this machine's {cores}): each worker is an interpreter "
                                              f"holding torch, the data and a model")
    if executor == "local" and not gpus and workers > cores:
        notices.append(f"workers={workers} is above this machine's {cores} cores: tickets will share cores")
    return notices


def check_ray_address(address: str | None) -> None:
    """A ``host:port`` that does not answer is refused at once (Ray itself
    would wait a long time before failing)."""
    if not address:
        return
    if address == "auto":  # Ray's own lookup (RAY_ADDRESS, the last `ray start`), which fails late otherwise
        from ray._private.services import canonicalize_bootstrap_address

        try:
            address = canonicalize_bootstrap_address("auto")
        except ConnectionError:
            raise ConfigError("ray_address", "auto", "auto only where a Ray cluster runs (none was found: start one "
                              "with `ray start --head`), its host:port, or null for a local Ray instance") from None
        if address is None:
            return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        answer = _grpc_answer(host or "127.0.0.1", int(port))
    except (OSError, ValueError) as err:
        answer = f"does not answer: {err}"
    if answer:
        raise ConfigError("ray_address", address, f"the address of a running Ray cluster, host:port (this one "
                          f"{answer}), auto, or null for a local Ray instance")


# HTTP/2's client preface and an empty SETTINGS frame: Ray's GCS and its client
# server are gRPC servers, which answer with a SETTINGS frame.  A listener that
# is not one passed a bare connect and then left ray.init waiting for minutes.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _grpc_answer(host: str, port: int, timeout: float = 3.0) -> str | None:
    """None when a gRPC server listens at host:port, else what is wrong."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(_HTTP2_HELLO)
        head = b""
        try:
            while len(head) < 9 and (chunk := sock.recv(9 - len(head))):
                head += chunk
        except socket.timeout:
            return f"accepts connections but did not answer as Ray's gRPC server within {timeout:g} s"
    if len(head) == 9 and head[3] == 4:
        return None
    return "answers, but not as Ray's gRPC server (another program listens there)"


# ----------------------------------------------------------- executors
@dataclass
class Failure:
    """A worker's one line and exit code."""

    code: int
    message: str


def failure_of(err: BaseException, index: int) -> Failure:
    code = getattr(err, "exit_code", None)
    if code is None:  # not one of ours: the traceback helps
        import traceback

        traceback.print_exc()
        return Failure(1, f"worker {index}: {type(err).__name__}: {err}")
    return Failure(code, str(err))


# The first lines a worker interpreter runs, before it imports torch or this
# package (2-3 s): a driver SIGKILLed while they import left them running with
# parent 1 (issue 35).  PR_SET_PDEATHSIG kills the worker with its driver; the
# parent check covers a driver that died before the prctl.  The package's own
# folder goes first on sys.path so that a checkout's workers run the
# checkout's code, not another installed version.  Ctrl-C reaches the whole
# process group: only the driver takes it (three tracebacks came with two workers).
_WORKER_ENTRY = """\
import ctypes, os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it stops the workers and says so
try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL (Linux)
except (OSError, AttributeError):
    pass
if os.getppid() != {driver}:
    sys.exit(0)
sys.path.insert(0, {package_root!r})
from recbole_lth.engine.parallel import worker_process_main
worker_process_main({job_file!r})
"""

# A driver's job folder in the system temporary directory names its pid, so a
# later driver can remove the folder of one that was killed (nothing else
# would: a SIGKILL runs no cleanup).
_JOB_FOLDER_PREFIX = "recbole_lth_workers_"


def worker_entry(job_file: Path) -> str:
    package_root = str(Path(__file__).resolve().parents[2])  # the folder that holds recbole_lth/
    return _WORKER_ENTRY.format(driver=os.getpid(), package_root=package_root, job_file=str(job_file))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def sweep_job_folders(temp_dir: Path) -> None:
    """Remove the job folders of drivers that no longer run."""
    import shutil

    for folder in temp_dir.glob(f"{_JOB_FOLDER_PREFIX}*_*"):
        pid = folder.name[len(_JOB_FOLDER_PREFIX):].split("_", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def worker_process_main(job_file: str) -> None:
    """Entry of a local worker process: a fresh interpreter, so the user's
    script is never re-imported (unlike ``multiprocessing``'s spawn)."""
    import pickle
    import sys

    import torch

    with open(job_file, "rb") as f:
        target, args, index, threads = pickle.load(f)
    torch.set_num_threads(threads)
    try:
        target(*args, index)
    except BaseException as err:  # noqa: BLE001 - every failure becomes one line and an exit code
        failure = failure_of(err, index)
        Path(job_file).with_suffix(".failed").write_text(f"{failure.code}\n{failure.message}")
        sys.exit(failure.code)


def run_local(target, args: tuple, workers: int, threads: int, poll: Callable[[], None]) -> None:
    """``target(*args, index)`` in ``workers`` worker processes; ``poll()``
    runs while they work (the driver's progress).  A worker that fails stops
    the others and raises :class:`RankFailed` with its line; a worker killed
    from outside leaves its tickets to the others."""
    import pickle
    import subprocess
    import sys
    import tempfile
    import time

    sweep_job_folders(Path(tempfile.gettempdir()))
    with tempfile.TemporaryDirectory(prefix=f"{_JOB_FOLDER_PREFIX}{os.getpid()}_") as folder:
        processes = []
        for index in range(workers):
            job_file = Path(folder) / f"worker_{index}.pkl"
            with open(job_file, "wb") as f:
                pickle.dump((target, args, index, threads), f)
            processes.append((subprocess.Popen([sys.executable, "-c", worker_entry(job_file)]),
                              job_file.with_suffix(".failed")))
        try:
            running = list(processes)
            while running:
                time.sleep(0.5)
                poll()
                for process, failed in [p for p in running if p[0].poll() is not None]:
                    running.remove((process, failed))
                    if failed.is_file():
                        code, message = failed.read_text().split("\n", 1)
                        raise RankFailed(int(code), message)
                    if process.returncode != 0:
                        logger.warning(f"a worker ended with exit code {process.returncode} (killed?); the "
                                       f"other workers and then this process train what it left")
        finally:
            for process, _ in processes:
                if process.poll() is None:
                    process.kill()
                process.wait()


def _ray_entry(target, args: tuple, index: int, threads: int):
    import torch

    torch.set_num_threads(threads)
    try:
        target(*args, index)
    except BaseException as err:  # noqa: BLE001 - returned to the driver as one line
        failure = failure_of(err, index)
        return failure.code, failure.message
    return None


def run_ray(target, args: tuple, workers: int, threads: int, poll: Callable[[], None],
            address: str | None) -> None:
    """The same workers as Ray tasks (``num_cpus`` = their threads)."""
    import ray  # after recbole_lth's compatibility patches (this package's __init__)

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 **({} if address else {"num_cpus": max(os.cpu_count() or 1, workers * threads)}))
    remote = ray.remote(num_cpus=threads, max_retries=0)(_ray_entry)
    try:
        _refuse_unschedulable(ray, threads, address)
        pending = [remote.remote(target, args, i, threads) for i in range(workers)]
        while pending:
            done, pending = ray.wait(pending, timeout=0.5)
            poll()
            for ref in done:
                try:
                    failure = ray.get(ref)
                except ray.exceptions.RayError as err:  # its process died: the others carry on
                    logger.warning(f"a Ray worker ended without finishing ({type(err).__name__}); the other "
                                   f"workers and then this process train what it left")
                    continue
                if failure is not None:
                    for other in pending:
                        ray.cancel(other, force=True)
                    raise RankFailed(*failure)
    finally:
        if started:
            ray.shutdown()



def _refuse_unschedulable(ray, threads: int, address: str | None) -> None:
    """A task asks for ``threads`` CPUs; on a cluster with no node that large
    Ray waits for one forever, so the run hung with no message."""
    largest = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
    if largest < threads:
        raise ConfigError("worker_threads", threads, f"at most {int(largest)}: each Ray task asks for worker_threads "
                          f"CPUs and no node of the cluster at {address} has more than {int(largest)}")
