"""Batch runs: many steering jobs from a JSONL/CSV file, resumable, with failures isolated, on a local process pool
or Ray (docs/scale.md). Jobs are data: a job is `rewardsteer run`'s options as a JSON object, its id the hash of
its canonical JSON, its seed derived from the id."""

from .backends import LocalBackend, RayBackend
from .driver import BatchSummary, run_batch
from .jobs import Job, JobsError, load_jobs, make_job
from .manifest import Manifest
from .runner import execute

__all__ = ["BatchSummary", "Job", "JobsError", "LocalBackend", "Manifest", "RayBackend", "execute", "load_jobs",
           "make_job", "run_batch"]
