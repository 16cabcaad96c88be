"""Hard molecule targets: multi-property ranges under RDKit gold, rare under the unsteered `moses-mdlm` prior.

A molecule **meets** a target (the gold rule, `meets` / `MoleculeGold`) when it parses with RDKit and every
property of `PROPERTIES` that the target names lies in its closed range; an invalid sample meets nothing.
The properties are RDKit's (`rewardsteer.molecules.chem`): QED, SA, MW, Crippen logP, ring count, aromatic
rings, rotatable bonds, TPSA and H-bond donors.

What methods optimize (`molecule_objective`) is a soft version of the same ranges: minus the distance of each
property outside its range, in units of its standard deviation over the first 10,000 MOSES test molecules
(`SPREAD`), summed over the target's properties. It is a `WeightedSum` of one `PropertyRange` member per
property, so each member's score stays visible; not differentiable (token ids); an invalid molecule scores
`INVALID_SPREADS` below in every member.

The targets' rates were measured by `benchmarks/targets.py` (docs/benchmarks/targets.json) on 20,000 unsteered
samples of `moses_mdlm(32)` and on the MOSES test split: each of the `rare` targets has a one-sided 95% upper
bound ≤ 1/1,000 under the prior while 4–25% of MOSES test molecules meet it (the prior is far from MOSES, so
the targets measure how far steering pulls it toward the data). `issue-example` (the issue's own example) is
kept as a reference row with `rare=False`: the prior meets it at about 1.25e-3.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

from ..core import Reward
from ..errors import UnknownNameError
from ..molecules import chem
from ..molecules.data import Vocabulary, load_moses
from ..molecules.oracles import MoleculeDecoder
from ..molecules.proxies import fingerprints
from ..rewards.base import WeightedSum
from .leaderboard import Task, pairwise_mean
from .targets import within

PROPERTIES = {"qed": chem.qed, "sa": chem.sa, "mw": chem.mw, "logp": chem.logp, "rings": chem.rings,
              "aromatic_rings": chem.aromatic_rings, "rotatable_bonds": chem.rotatable_bonds, "tpsa": chem.tpsa,
              "hbd": chem.hbd}
# sd of each property over the first 10,000 MOSES test molecules (docs/benchmarks/targets.json, `spread`)
SPREAD = {"qed": 0.1147, "sa": 0.4624, "mw": 28.31, "logp": 0.9346, "rings": 0.7665, "aromatic_rings": 0.7716,
          "rotatable_bonds": 1.509, "tpsa": 18.26, "hbd": 0.7539}
INVALID_SPREADS = 10.0  # an invalid molecule's score in each member: 10 spreads outside the range
REAL_N = 1000  # MOSES test molecules (file order) whose targets-meeting members give `real_diversity`
FINGERPRINT_BITS = 2048


@dataclass(frozen=True)
class MoleculeTarget:
    """Property ranges ({property: (low or None, high or None)}) a molecule must meet; `rare` is False for a
    reference row the prior meets more often than 1/1,000."""

    name: str
    ranges: dict = field(default_factory=dict)
    description: str = ""
    rare: bool = True


MOLECULE_TARGETS = {t.name: t for t in (
    MoleculeTarget("druglike-easy", {"qed": (0.88, None), "sa": (None, 2.5), "mw": (250, 400)},
                   "QED >= 0.88, SA <= 2.5, MW in [250, 400]"),
    MoleculeTarget("aromatic-easy", {"aromatic_rings": (3, None), "sa": (None, 2.5)}, ">= 3 aromatic rings, SA <= 2.5"),
    MoleculeTarget("lipophilic-druglike", {"logp": (3, 4), "mw": (300, 400), "sa": (None, 3.0), "qed": (0.8, None)},
                   "logP in [3, 4], MW in [300, 400], SA <= 3, QED >= 0.8"),
    MoleculeTarget("top-qed-heavy", {"qed": (0.9, None), "sa": (None, 2.2), "mw": (300, 400)},
                   "QED >= 0.9, SA <= 2.2, MW in [300, 400]"),
    MoleculeTarget("rigid-druglike", {"rotatable_bonds": (None, 3), "rings": (3, None), "qed": (0.8, None),
                                      "sa": (None, 2.5)}, "<= 3 rotatable bonds, >= 3 rings, QED >= 0.8, SA <= 2.5"),
    MoleculeTarget("polar-druglike", {"qed": (0.85, None), "tpsa": (60, 90), "sa": (None, 2.5), "hbd": (None, 2)},
                   "QED >= 0.85, TPSA in [60, 90], SA <= 2.5, HBD <= 2"),
    MoleculeTarget("cns-like", {"tpsa": (None, 60), "mw": (250, 350), "logp": (2, 4), "hbd": (None, 1),
                                "sa": (None, 2.5), "qed": (0.85, None)},
                   "TPSA <= 60, MW in [250, 350], logP in [2, 4], HBD <= 1, SA <= 2.5, QED >= 0.85"),
    MoleculeTarget("issue-example", {"qed": (0.85, None), "sa": (None, 3.0), "mw": (250, 400)},
                   "the issue's example, QED >= 0.85, SA <= 3, MW in [250, 400] (reference: not rare enough)",
                   rare=False),
)}


def molecule_target(name: str) -> MoleculeTarget:
    if name not in MOLECULE_TARGETS:
        raise UnknownNameError("molecule target", name, list(MOLECULE_TARGETS))
    return MOLECULE_TARGETS[name]


def property_table(mols: list, names=None) -> dict[str, torch.Tensor]:
    """{property: (N,) float64} of RDKit molecules (None, an invalid molecule, gives NaN everywhere)."""
    names = tuple(PROPERTIES) if names is None else tuple(names)
    for n in names:
        if n not in PROPERTIES:
            raise UnknownNameError("molecule property", n, list(PROPERTIES))
    rows = [[math.nan] * len(names) if m is None else [PROPERTIES[n](m) for n in names] for m in mols]
    values = torch.tensor(rows, dtype=torch.float64).reshape(len(mols), len(names))
    return {n: values[:, i] for i, n in enumerate(names)}


def meets(table: dict[str, torch.Tensor], target: MoleculeTarget) -> torch.Tensor:
    """(N,) bool: the gold rule on a `property_table` (valid, every named property in its closed range)."""
    return torch.isfinite(table["qed"]) & within(table, target.ranges)


class MoleculeGold:
    """The success rule on token ids: decode with the sampler's vocabulary, then `meets`."""

    def __init__(self, target: MoleculeTarget, vocab: Vocabulary, decoder: MoleculeDecoder | None = None):
        self.target, self.decoder = target, decoder or MoleculeDecoder(vocab)

    def __call__(self, samples: torch.Tensor) -> torch.Tensor:
        table = property_table(self.decoder(samples), dict.fromkeys(("qed", *self.target.ranges)))
        return meets(table, self.target)


class PropertyRange(Reward):
    """Minus the distance of one RDKit property from [low, high] in units of `SPREAD`, over token ids; an invalid
    molecule scores −INVALID_SPREADS. Not differentiable."""

    differentiable = False

    def __init__(self, prop: str, low, high, decoder: MoleculeDecoder):
        if prop not in PROPERTIES:
            raise UnknownNameError("molecule property", prop, list(PROPERTIES))
        self.prop, self.low, self.high, self.decoder = prop, low, high, decoder
        self.name = f"{prop}-in-range"

    def score(self, samples: torch.Tensor, cond=None) -> torch.Tensor:
        value = property_table(self.decoder(samples), (self.prop,))[self.prop]
        below = (self.low - value).clamp(min=0) if self.low is not None else torch.zeros_like(value)
        above = (value - self.high).clamp(min=0) if self.high is not None else torch.zeros_like(value)
        out = -(below + above) / SPREAD[self.prop]
        return torch.nan_to_num(out, nan=-INVALID_SPREADS).float().to(samples.device)


def molecule_objective(target: MoleculeTarget, vocab: Vocabulary, decoder: MoleculeDecoder | None = None) -> Reward:
    """The soft range objective of `target` (module docstring): 0 exactly when every range holds."""
    decoder = decoder or MoleculeDecoder(vocab)
    members = {p: (PropertyRange(p, lo, hi, decoder), 1.0) for p, (lo, hi) in target.ranges.items()}
    return WeightedSum(members, name=f"objective:{target.name}")


def mol_features(mols: list) -> torch.Tensor:
    """(N, FINGERPRINT_BITS) radius-2 Morgan bit fingerprints (zeros for an invalid molecule): the diversity
    features, whose Euclidean distance is the square root of the number of differing bits."""
    fps = fingerprints([m for m in mols if m is not None], FINGERPRINT_BITS, counts=False)
    out = torch.zeros(len(mols), FINGERPRINT_BITS)
    out[[i for i, m in enumerate(mols) if m is not None]] = fps
    return out


@functools.cache
def reference_molecules(n: int = REAL_N) -> tuple[list, dict[str, torch.Tensor]]:
    """The first n MOSES test molecules and their property table (computed once per process)."""
    mols = [chem.mol(s) for s in load_moses("test", limit=n)]
    return mols, property_table(mols)


def real_diversity(target: MoleculeTarget, n: int = REAL_N) -> float:
    """Mean pairwise fingerprint distance of the MOSES test molecules (first n) that meet `target`."""
    mols, table = reference_molecules(n)
    keep = meets(table, target).tolist()
    return pairwise_mean(mol_features([m for m, k in zip(mols, keep) if k]))


def molecule_task(target: MoleculeTarget, vocab: Vocabulary) -> Task:
    """A leaderboard task over token ids of `vocab`: the soft range objective to steer, the gold rule as success,
    fingerprints as diversity features against MOSES test molecules that meet the target."""
    decoder = MoleculeDecoder(vocab)
    return Task(target.name, "molecules", molecule_objective(target, vocab, decoder), MoleculeGold(target, vocab, decoder),
                lambda samples: mol_features(decoder(samples)), real_diversity(target))
