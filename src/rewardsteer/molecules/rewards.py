"""Chemistry rewards on token ids: RDKit oracles (real, non-learned), a multi-objective target, validity.

Samples are token ids (B, L) of a `Vocabulary`; each reward decodes them to SMILES (memoized: particle methods
score the same molecule many times) and scores the RDKit molecule. Not differentiable (use FK steering,
SVDD or best-of-N). An invalid or empty molecule gets the oracle's documented `INVALID` score, never NaN,
and is counted in `reward.invalid` (the `valid` monitor reports the valid fraction of a result).

| name            | score                                        | invalid molecule |
|-----------------|----------------------------------------------|------------------|
| qed             | QED in [0, 1]                                | 0                |
| neg_sa          | −SA in [−10, −1] (higher = easier)           | −10              |
| logp            | Crippen logP                                 | −10              |
| penalized_logp  | logP − SA − large rings                      | −20              |
| sa_ok           | −max(0, SA − 4)                              | −6               |
| mw_ok           | −max(0, 250 − MW, MW − 450) / 100            | −2.5             |
| qed_sa_mw       | weighted sum qed + sa_ok + mw_ok (the multi-objective target) | sum of the above |
| proxies-qed[:agg] | 3 learned QED regressors on fingerprints (molecules.proxies), mean or :wco/:uwo/... | 0 each |
"""

from __future__ import annotations

from typing import Any

import torch

from ..core import Reward
from ..errors import RewardsteerError, UnknownNameError
from ..rewards.base import WeightedSum
from . import chem
from .data import Vocabulary
from .oracles import MULTI, ORACLES, MoleculeDecoder, bundled_vocabulary

# learned proxies (molecules.proxies): the 3 bundled QED regressors, aggregated by mean (default) or `:AGG`
PROXY_SPECS = ("proxies-qed", "proxies-qed:mean", "proxies-qed:wco", "proxies-qed:uwo", "proxies-qed:mean_std")
NAMES = (*ORACLES, *MULTI, *PROXY_SPECS)


class OracleReward(Reward):
    """One RDKit oracle as a reward over token ids; invalid molecules score `invalid_score`."""

    differentiable = False

    def __init__(self, oracle: str, vocab: Vocabulary, decoder: MoleculeDecoder | None = None):
        if oracle not in ORACLES:
            raise UnknownNameError("molecule reward", oracle, NAMES)
        self.name, self.fn, self.invalid_score = oracle, *ORACLES[oracle]
        self.decoder = decoder or MoleculeDecoder(vocab)
        self.invalid = 0  # invalid molecules scored so far

    def score(self, samples: torch.Tensor, cond: Any = None) -> torch.Tensor:
        mols = self.decoder(samples)
        self.invalid += sum(m is None for m in mols)
        values = [self.invalid_score if m is None else self.fn(m) for m in mols]
        return torch.tensor(values, dtype=torch.float32, device=samples.device)


class Validity(Reward):
    """1 for a sequence that decodes to a valid molecule, else 0 (a monitor: its mean is the validity)."""

    differentiable = False
    name = "valid"

    def __init__(self, vocab: Vocabulary, decoder: MoleculeDecoder | None = None):
        self.decoder = decoder or MoleculeDecoder(vocab)

    def score(self, samples, cond=None):
        return torch.tensor([float(m is not None) for m in self.decoder(samples)], device=samples.device)


def reward(name: str, vocab: Vocabulary | None = None) -> Reward:
    """A chemistry reward by name (see the module table) over token ids of `vocab` (default: moses-mdlm's):
    one oracle, or the multi-objective `qed_sa_mw`, a `WeightedSum` whose members (QED and the two
    constraint penalties) stay visible in every result."""
    vocab = bundled_vocabulary() if vocab is None else vocab
    if name in PROXY_SPECS:
        from ..rewards.aggregates import aggregate_from_spec
        from .proxies import proxy_ensemble

        _, _, agg = name.partition(":")
        return proxy_ensemble("qed", vocab, aggregate=aggregate_from_spec(agg) if agg else None)
    decoder = MoleculeDecoder(vocab)
    if name in MULTI:
        return WeightedSum({k: (OracleReward(k, vocab, decoder), w) for k, w in MULTI[name].items()}, name=name)
    return OracleReward(name, vocab, decoder)


def check_smiles_reward(name: str) -> dict[str, float]:
    """The RDKit oracles (with weights) behind a reward that scores SMILES directly; learned proxies refused."""
    if name in PROXY_SPECS:
        raise RewardsteerError(f"'{name}' is a learned proxy that scores moses-mdlm's tokens, not an RDKit oracle; "
                               f"score SMILES with {', '.join((*ORACLES, *MULTI))}, or steer toward it with "
                               f"`rewardsteer run --model moses-mdlm --reward {name}`")
    if name not in ORACLES and name not in MULTI:
        raise UnknownNameError("SMILES reward (an RDKit oracle)", name, (*ORACLES, *MULTI))
    return MULTI.get(name, {name: 1.0})


def score_smiles(name: str, smiles: list[str]) -> list[float]:
    """A reward's values for SMILES strings directly (no tokens): oracles, or the multi-objective sum."""
    parts = check_smiles_reward(name)
    mols = [chem.mol(s) for s in smiles]
    return [sum(w * (ORACLES[p][1] if m is None else ORACLES[p][0](m)) for p, w in parts.items()) for m in mols]


def gold_monitors(vocab: Vocabulary | None = None, names=("qed", "neg_sa", "logp")) -> dict[str, Reward]:
    """Held-out RDKit oracles plus validity: what a run on learned proxies is judged by."""
    vocab = bundled_vocabulary() if vocab is None else vocab
    decoder = MoleculeDecoder(vocab)
    return {"valid": Validity(vocab, decoder), **{n: OracleReward(n, vocab, decoder) for n in names}}
