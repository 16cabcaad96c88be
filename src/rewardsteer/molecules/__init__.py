"""Molecules: MOSES data, the masked diffusion model `moses-mdlm`, RDKit oracles and learned proxies.

    import rewardsteer as rs
    from rewardsteer import molecules
    sampler = molecules.moses_mdlm()                  # a Sampler over token ids
    result = rs.svdd(sampler, molecules.reward("qed", sampler.vocab), n=8, particles=8)
    print(sampler.to_smiles(result.samples))
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..bundled.masked import MaskedDiffusionSampler
from .data import Vocabulary

DEFAULT_STEPS = 32


class MoleculeSampler(MaskedDiffusionSampler):
    """A masked diffusion sampler whose token ids are molecules of `vocab` (SELFIES or SMILES tokens)."""

    def __init__(self, denoiser: torch.nn.Module, vocab: Vocabulary, num_steps: int = DEFAULT_STEPS):
        super().__init__(denoiser, vocab.length, num_steps, vocab.mask_id)
        self.vocab = vocab

    def to_smiles(self, ids: torch.Tensor) -> list[str]:
        """Token ids (N, L) -> SMILES ('' where a sequence is no molecule)."""
        return self.vocab.decode(ids)


def moses_mdlm(num_steps: int = DEFAULT_STEPS, name: str = "moses-mdlm", weights_dir: Path | None = None) -> MoleculeSampler:
    """The bundled masked diffusion model of MOSES molecules (MDLM, Sahoo et al. 2024) as a T-step sampler."""
    from ..bundled.hub import WEIGHTS_DIR, load_network, model_card  # hub registers this package's network class

    weights_dir = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    card = model_card(name, weights_dir)
    return MoleculeSampler(load_network(name, weights_dir), Vocabulary(**card["vocabulary"]), num_steps)


def __getattr__(name):  # rewards and metrics import RDKit: load them on first use
    if name in ("reward", "rewards"):
        import importlib

        # import_module, not `from . import rewards`: that form asks this package for the attribute first, which
        # would call this function again (a RecursionError before 0.2)
        rewards = importlib.import_module(f"{__name__}.rewards")
        return rewards.reward if name == "reward" else rewards
    raise AttributeError(name)
