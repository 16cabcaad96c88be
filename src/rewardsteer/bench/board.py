"""`rewardsteer bench leaderboard`: build the domain (generators, tasks, methods) and run the board.

Images: the one-step methods steer `mnist-onestep` (cond=None, the mixture prior); the particle methods steer
mnist-flow's stochastic sampler whose digit emerges while sampling (`models.emergent_sampler`, eta = 1), since on
the mixture prior the digit is fixed at step 0 and particle methods are blind. Molecules: moses-mdlm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import RewardsteerError, UnknownNameError
from . import board_report, entries
from .leaderboard import BUDGETS, Task, run_board, summarize

IMAGE_STEPS = 8  # particle methods' sampler steps (a budget B buys B / 8 particles)
MOLECULE_STEPS = 16


@dataclass(frozen=True)
class Config:
    domain: str = "images"
    budgets: tuple = BUDGETS
    seeds: tuple = (0, 1, 2)
    outputs: int = 8
    methods: tuple | None = None
    targets: tuple | None = None
    steps: int | None = None
    real: int = 10_000  # real test digits the diversity reference is measured on
    report_only: bool = False  # summarize the cells already in --out, run none


QUICK = Config(budgets=(16, 64), seeds=(0,), outputs=2, methods=("best_of_n", "reno", "svdd"),
               targets=("thin-0",), steps=4, real=1000)


def image_domain(cfg: Config):
    from .. import models
    from ..bundled.data import load_mnist
    from .targets import IMAGE_TARGETS, ImageGold, image_objective, image_target, real_diversity

    names = cfg.targets or tuple(IMAGE_TARGETS)
    targets = [image_target(n) for n in names]  # unknown names fail before any weights load
    steps = cfg.steps or IMAGE_STEPS
    board = entries.select(entries.image_entries(steps), cfg.methods)
    gold, features = ImageGold(), models.classifier("mnist-judge").features
    test = load_mnist().test
    real, labels = test.images[:cfg.real], test.labels[:cfg.real]
    tasks = [Task(t.name, "images", image_objective(t), lambda x, t=t: gold(x, t), features,
                  real_diversity(features, real, labels, t, gold)) for t in targets]
    generators = {"one_step": models.onestep(), "sampler": models.emergent_sampler(steps, eta=1.0)}
    return generators, tasks, board


def molecule_domain(cfg: Config):
    from .mol_targets import MOLECULE_TARGETS, molecule_task

    names = cfg.targets or tuple(n for n, t in MOLECULE_TARGETS.items() if t.rare)  # the example is a reference
    for n in names:
        if n not in MOLECULE_TARGETS:
            raise UnknownNameError("molecule target", n, list(MOLECULE_TARGETS))
    from ..molecules import moses_mdlm

    steps = cfg.steps or MOLECULE_STEPS
    sampler = moses_mdlm(num_steps=steps)
    board = entries.select(entries.molecule_entries(steps), cfg.methods)
    return {"sampler": sampler}, [molecule_task(MOLECULE_TARGETS[n], sampler.vocab) for n in names], board


DOMAINS: dict[str, Callable] = {"images": image_domain, "molecules": molecule_domain}


def run(cfg: Config, out: str | Path, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Run (or resume) the board for `cfg` into `out`; write leaderboard.{json,md,png}."""
    if cfg.domain not in DOMAINS:
        raise UnknownNameError("leaderboard domain", cfg.domain, list(DOMAINS))
    if any(b < 1 for b in cfg.budgets) or not cfg.seeds or cfg.outputs < 1:
        raise RewardsteerError("budgets and --outputs must be positive and at least one seed given")
    generators, tasks, board = DOMAINS[cfg.domain](cfg)
    records = run_board(board, generators, tasks, cfg.budgets, cfg.seeds, cfg.outputs, out, log, not cfg.report_only)
    summary = summarize(records, tasks)
    notes = [f"Domain: {cfg.domain}; targets: {', '.join(t.name for t in tasks)}; seeds {list(cfg.seeds)}; "
             f"{cfg.outputs} outputs per cell; methods: {', '.join(e.name for e in board)}.",
             "A success meets the gold rule (docs/benchmarks/leaderboard.md); a hacked sample is a failure."]
    return board_report.write(summary, records, out, f"Leaderboard: {cfg.domain}", notes)


def quick(domain: str = "images") -> Config:
    return QUICK if domain == "images" else replace(QUICK, domain=domain, methods=("best_of_n", "svdd"),
                                                     targets=None, steps=8)
