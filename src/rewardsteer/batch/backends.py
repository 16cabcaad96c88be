"""Where jobs run: in this process, in a local process pool, or as Ray tasks. Every backend calls the same
`runner.execute(job, root)` and yields its records as jobs finish; only the batch process writes the manifest.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..errors import RewardsteerError
from .jobs import Job
from .manifest import OutputError
from .runner import execute, prepare_worker

WORKER_DIED = ("the worker process died while running this job, twice (killed, or out of memory?); it is "
               "recorded as failed")


def default_threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


class LocalBackend:
    """`workers` processes on this machine (spawned, each loading the models once and using `threads` torch
    threads); `workers=1` runs the jobs in this process."""

    def __init__(self, workers: int = 1, threads: int | None = None):
        if workers < 1:
            raise RewardsteerError(f"--workers must be at least 1, got {workers}")
        self.workers, self.threads = workers, threads or default_threads(workers)

    def describe(self) -> str:
        where = "in this process" if self.workers == 1 else f"{self.workers} worker processes"
        return f"local: {where}, {self.threads} torch thread(s) each"

    def run(self, jobs: Iterable[Job], root: Path) -> Iterator[dict]:
        jobs = list(jobs)
        if self.workers == 1:
            import torch

            threads = torch.get_num_threads()
            prepare_worker(self.threads)
            try:
                for job in jobs:
                    yield execute(job, root)
            finally:
                from ..bundled.hub import keep_loaded

                torch.set_num_threads(threads)
                keep_loaded(False)
            return
        yield from self._pool(jobs, root)

    def _pool(self, jobs: list[Job], root: Path) -> Iterator[dict]:
        """At most `workers` jobs in flight, so a worker that dies (SIGKILL, the OOM killer) breaks only the jobs
        running beside it: those go to a fresh pool once more, and a job in two broken pools is recorded failed."""
        attempts = {j.id: 0 for j in jobs}
        queue = list(reversed(jobs))  # popped from the end: file order
        while queue:
            pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=prepare_worker, initargs=(self.threads, True))
            running: dict = {}
            broken = False
            try:
                while (queue or running) and not broken:
                    while queue and len(running) < self.workers:
                        job = queue.pop()
                        running[pool.submit(execute, job, str(root))] = job
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for f in done:
                        if isinstance(f.exception(), BrokenProcessPool):
                            broken = True
                            continue
                        job = running.pop(f)
                        if isinstance(f.exception(), OutputError):
                            raise f.exception()
                        yield f.result() if f.exception() is None else _failed(job, f.exception())
            finally:
                pool.shutdown(wait=False, cancel_futures=True)
                _stop_workers(pool)
            for f, job in running.items():  # the jobs of a broken pool
                if f.done() and not f.cancelled() and f.exception() is None:
                    yield f.result()
                    continue
                attempts[job.id] += 1
                if attempts[job.id] >= 2:
                    yield _failed(job, None)
                else:
                    queue.append(job)


def _failed(job: Job, exc: BaseException | None) -> dict:
    error = WORKER_DIED if exc is None else f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return {"id": job.id, "line": job.line, "status": "failed", "label": job.label, "seed": job.seed, "error": error}


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool's processes now (an interrupted batch must not leave jobs running behind it)."""
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        if p.is_alive():
            p.terminate()
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        p.join(timeout=5)


class RayBackend:
    """The same jobs as Ray tasks: one GPU per task when the cluster has GPUs (`num_gpus`, `num_cpus` per task
    configurable); the tasks write into the shared output folder, the batch process writes the manifest.
    `address`: a cluster address, "auto" (the running cluster), or "local" (start one on this machine); when Ray
    is already initialized in this process, that instance is used."""

    def __init__(self, address: str | None = "auto", num_cpus: float | None = None, num_gpus: float | None = None,
                 threads: int | None = None):
        self.address, self.num_cpus, self.num_gpus, self.threads = address, num_cpus, num_gpus, threads

    def connect(self):
        """Connect to (or start) Ray now: an address nobody answers on is one line at once, and Ray's own log lines
        from a failed start are kept off the terminal (the last of them ends the error)."""
        try:
            import ray
        except ImportError:
            raise RewardsteerError("--ray needs Ray: pip install 'rewardsteer[ray]'") from None
        if ray.is_initialized():
            return ray
        address = None if self.address in (None, "local") else self.address
        if address not in (None, "auto"):
            probe(address)
        with tempfile.TemporaryFile("w+") as log, quiet_fd(2, log):
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
                return ray
            except Exception as e:  # noqa: BLE001 - no cluster at that address, or Ray cannot start here
                log.seek(0)
                said = [line for line in log.read().splitlines() if line.strip()][-1:]
                reason = " ".join(" ".join([str(e), *said]).split())[:300]
        raise RewardsteerError(f"--ray {self.address}: could not connect to or start Ray: {reason}")


    def describe(self) -> str:
        return f"ray: {self.address or 'local'}"

    def run(self, jobs: Iterable[Job], root: Path) -> Iterator[dict]:
        ray = self.connect()
        gpus = self.num_gpus
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        cpus = self.num_cpus if self.num_cpus is not None else 1
        threads = self.threads or max(1, int(cpus))
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=1)(_ray_execute)
        refs = {task.remote(job.to_json(), str(root), threads): job for job in jobs}
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                job = refs.pop(done[0])
                try:
                    record = ray.get(done[0])
                except Exception as e:  # noqa: BLE001 - the task's worker died twice (OOM, node lost)
                    if isinstance(getattr(e, "cause", e), OutputError):
                        raise getattr(e, "cause", e) from None
                    record = _failed(job, e)
                yield record
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)


def probe(address: str, timeout: float = 5.0) -> None:
    """One line when nothing listens at a Ray address (host:port, or ray://host:port), instead of Ray's minutes of
    retries and log lines."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RewardsteerError(f"--ray takes HOST:PORT (e.g. 10.0.0.5:6379), auto or local; got '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise RewardsteerError(f"--ray {address}: no Ray cluster answers there ({e.strerror or type(e).__name__}); "
                               "start one (`ray start --head`) or use --ray local") from None


@contextlib.contextmanager
def quiet_fd(fd: int, into):
    """Send file descriptor `fd` (2: stderr, where Ray's C++ core logs) into the file `into` within the block."""
    import sys

    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        os.dup2(into.fileno(), fd)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)
        os.close(saved)


_RAY_PREPARED = False


def _ray_execute(job: dict, root: str, threads: int) -> dict:
    global _RAY_PREPARED
    if not _RAY_PREPARED:  # Ray reuses worker processes: models load once per worker
        prepare_worker(threads)
        _RAY_PREPARED = True
    return execute(job, root)
