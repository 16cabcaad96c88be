"""Learned property proxies: MLPs on Morgan fingerprints standing in for an RDKit oracle.

The over-optimization setting of Gao et al. 2023 ("Scaling laws for reward model overoptimization") and Coste
et al. 2024 ("Reward model ensembles help mitigate overoptimization") on molecules: steer toward learned proxies
`moses-proxy-{prop}-{i}`, judge by the gold RDKit oracle (`rewards.OracleReward`). The proxies differ from gold
by design: another model family (an MLP on radius-2 Morgan count fingerprints, which sees substructure counts,
not RDKit's analytic formula over descriptors), and each member is fit to its own small random subset of MOSES
train with noisy labels (`rewardsteer.train.mol_proxies`), so members disagree off the data and can be fooled.
A proxy is unbounded (QED proxies may exceed 1); an invalid molecule gets the gold oracle's invalid score.

RDKit is imported only inside functions: `rewardsteer.hub` imports this module without the molecules extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..bundled.mol_nets import FingerprintMLP
from ..core import Reward
from ..rewards.base import Ensemble
from .data import Vocabulary

RADIUS = 2


def fingerprints(mols: list, bits: int = 2048, counts: bool = True) -> torch.Tensor:
    """Radius-2 Morgan fingerprints (counts, or bits with `counts=False`) of RDKit molecules: (N, bits) float."""
    import numpy as np
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=RADIUS, fpSize=bits)
    as_numpy = gen.GetCountFingerprintAsNumPy if counts else gen.GetFingerprintAsNumPy
    rows = [as_numpy(m).astype(np.float32) for m in mols]
    return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, bits)


class ProxyReward(Reward):
    """A `FingerprintMLP` as a reward over token ids; invalid molecules score the gold oracle's invalid score."""

    differentiable = False

    def __init__(self, net: FingerprintMLP, vocab: Vocabulary, name: str = "proxy", decoder=None):
        from .oracles import ORACLES, MoleculeDecoder

        self.net, self.name = net.eval(), name
        self.prop = net.config["prop"]
        self.invalid_score = ORACLES[self.prop][1]
        self.decoder = decoder or MoleculeDecoder(vocab)
        self.invalid = 0  # invalid molecules scored so far

    @torch.no_grad()
    def score(self, samples: torch.Tensor, cond: Any = None) -> torch.Tensor:
        mols = self.decoder(samples)
        valid = [i for i, m in enumerate(mols) if m is not None]
        self.invalid += len(mols) - len(valid)
        out = torch.full((len(mols),), self.invalid_score, dtype=torch.float32)
        if valid:
            ref = next(self.net.parameters())
            x = fingerprints([mols[i] for i in valid], self.net.config["bits"], self.net.config["counts"])
            out[valid] = self.net(x.to(ref.device, ref.dtype)).float().cpu()
        return out.to(samples.device)


def proxy_ensemble(prop: str = "qed", vocab: Vocabulary | None = None, k: int = 3, aggregate=None,
                   weights_dir: str | Path | None = None) -> Ensemble:
    """The bundled proxies `moses-proxy-{prop}-{0..k-1}` as an `Ensemble` (members `proxy-{prop}-{i}`, one
    shared decoder) under `aggregate` (a transform such as `aggregates.wco()`; default the mean). `vocab`
    defaults to the bundled moses-mdlm's."""
    from ..bundled.hub import WEIGHTS_DIR, load_network
    from .oracles import MoleculeDecoder, bundled_vocabulary

    vocab = bundled_vocabulary() if vocab is None else vocab
    weights_dir = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    decoder = MoleculeDecoder(vocab)
    members = {f"proxy-{prop}-{i}": ProxyReward(load_network(f"moses-proxy-{prop}-{i}", weights_dir), vocab,
                                                f"proxy-{prop}-{i}", decoder) for i in range(k)}
    return Ensemble(members, aggregate, name=f"proxies-{prop}")
