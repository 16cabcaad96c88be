"""The `rewardsteer batch` command (registered on the CLI group in rewardsteer.cli)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("batch")
@click.argument("jobs", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="output folder: manifest.jsonl, jobs/ID/, table.csv, contact_sheet.png; rerun with the same "
                   "--out to resume (one batch at a time per folder, or one per --shard)")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="local worker processes (1: run in this process); each loads the models once")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads per worker (default: CPU cores / workers)")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS|auto|local",
              help="run the jobs as Ray tasks on a cluster (auto: the running one; local: start one here); "
                   "needs rewardsteer[ray]")
@click.option("--num-gpus", type=click.FloatRange(min=0), default=None,
              help="--ray: GPUs per task (default: 1 when the cluster has GPUs, else 0)")
@click.option("--num-cpus", type=click.FloatRange(min=0), default=None, help="--ray: CPUs per task (default 1)")
@click.option("--shard", default=None, metavar="I/K", help="run only shard I of K (by job id), e.g. one per machine")
@click.option("--retry-failed", is_flag=True, help="run failed jobs again (by default finished jobs are skipped)")
@click.option("--check", is_flag=True, help="validate the jobs file, list the jobs and their ids (or every bad line); "
              "run nothing; needs no --out")
@click.option("--progress/--no-progress", default=True, show_default=True)
def batch(jobs, out, workers, threads, ray_address, num_gpus, num_cpus, shard, retry_failed, check, progress):
    """Run many steering jobs from JOBS, a JSONL file (one JSON object of `rewardsteer run` options per line) or a
    CSV file (one column per option), e.g. {"class": 7, "method": "best_of_n", "candidates": 64, "n": 4}.

    \b
    The whole file is validated first (errors name their lines). Each job gets a stable id (a hash of its
    options) and, unless it sets "seed", a seed derived from that id. Outputs go to OUT/jobs/ID (written to a
    temporary folder, then renamed); OUT/manifest.jsonl records each finished job's status, cost and scores.
    Killed at any moment, the same command resumes: finished jobs are skipped, unfinished ones redone.
    A failing job is recorded with its error and the batch goes on; exit code 1 if any job failed.
    See docs/scale.md for multi-GPU and multi-node runs.
    """
    from ..batch.backends import LocalBackend, RayBackend
    from ..batch.driver import run_batch, summary_lines
    from ..batch.jobs import JobsError, load_jobs, select_shard
    from ..errors import RewardsteerError
    from ..safety import exit_code, sigterm_as_interrupt

    if out is None and not check:
        raise click.UsageError("--out DIR is needed to run the jobs (--check validates them without it)")
    try:
        all_jobs = load_jobs(jobs)
    except JobsError as e:  # one line on stderr; --check lists every bad line on stdout first
        if check:
            for problem in e.problems:
                click.echo(problem)
        raise RewardsteerError(e.headline) from None
    if check:
        selected = select_shard(all_jobs, shard)
        for job in selected:
            click.echo(f"L{job.line} {job.id} seed {job.seed}: {job.label}")
        click.echo(f"{len(selected)} valid job(s) in {jobs}" + (f" (shard {shard} of {len(all_jobs)})" if shard else ""))
        return
    if ray_address is None and (num_gpus is not None or num_cpus is not None):
        raise click.UsageError("--num-gpus/--num-cpus are per Ray task: use them with --ray")
    backend = (RayBackend(ray_address, num_cpus=num_cpus, num_gpus=num_gpus, threads=threads) if ray_address
               else LocalBackend(workers, threads))
    with sigterm_as_interrupt() as state:
        try:
            summary = run_batch(jobs, out, backend, jobs=all_jobs, shard=shard, retry_failed=retry_failed,
                                progress=progress, echo=click.echo)
        except KeyboardInterrupt:
            click.echo(f"{state['signal'] or 'interrupted'}: finished jobs are recorded in {out}/manifest.jsonl; run "
                       "the same command again to resume", err=True)
            sys.exit(exit_code(state))
    for line in summary_lines(summary):
        click.echo(line)
    if summary.failed:
        sys.exit(1)
