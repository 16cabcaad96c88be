"""The RDKit oracle table (score and invalid score per name), the multi-objective target's weights, and the
memoized token -> molecule decoder that every molecule reward shares (`rewards`, `proxies`)."""

from __future__ import annotations

from collections import OrderedDict

import torch

from . import chem
from .data import Vocabulary

SA_MAX, MW_RANGE = 4.0, (250.0, 450.0)
ORACLES = {
    "qed": (chem.qed, 0.0),
    "neg_sa": (lambda m: -chem.sa(m), -10.0),
    "logp": (chem.logp, -10.0),
    "penalized_logp": (chem.penalized_logp, -20.0),
    "sa_ok": (lambda m: -max(0.0, chem.sa(m) - SA_MAX), -6.0),
    "mw_ok": (lambda m: -max(0.0, MW_RANGE[0] - chem.mw(m), chem.mw(m) - MW_RANGE[1]) / 100.0, -2.5),
}
MULTI = {"qed_sa_mw": {"qed": 1.0, "sa_ok": 1.0, "mw_ok": 1.0}}


class MoleculeDecoder:
    """Token ids -> RDKit molecules with a bounded memo (token tuple -> molecule or None)."""

    def __init__(self, vocab: Vocabulary, size: int = 100_000):
        self.vocab, self.size, self.memo = vocab, size, OrderedDict()

    def __call__(self, ids: torch.Tensor) -> list:
        out = []
        for row in ids.tolist():
            key = tuple(row)
            if key not in self.memo:
                self.memo[key] = chem.mol(self.vocab.decode(torch.tensor([row]))[0])
                if len(self.memo) > self.size:
                    self.memo.popitem(last=False)
            out.append(self.memo[key])
        return out


def bundled_vocabulary() -> Vocabulary:
    """The token vocabulary of the bundled `moses-mdlm`."""
    from ..bundled.hub import model_card

    return Vocabulary(**model_card("moses-mdlm")["vocabulary"])
