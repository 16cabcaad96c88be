"""RDKit chemistry: parsing, canonical SMILES and the property oracles (real, non-learned scores).

- QED: quantitative estimate of drug-likeness (Bickerton et al. 2012), in [0, 1].
- logP: Crippen's octanol-water partition coefficient (Wildman & Crippen 1999).
- SA: synthetic accessibility (Ertl & Schuffenhauer 2009), 1 (easy) to 10 (hard), with the fragment table
  that ships inside RDKit's own wheel (`rdkit/Contrib/SA_Score`; a pickle from RDKit itself, never a user file).
- penalized logP: logP − SA − (number of rings larger than 6 atoms), the unnormalized form of
  Gómez-Bombarelli et al. 2018 / You et al. 2018 (GCPN).
- MW: molecular weight (Da); rings: ring count.
- Descriptors of the benchmark's molecule targets (`bench.mol_targets`): TPSA (topological polar surface area,
  Ertl et al. 2000), H-bond donors (Lipinski), rotatable bonds and aromatic rings (RDKit's rdMolDescriptors).
RDKit is an optional extra (`rewardsteer[molecules]`); importing this module without it names the fix.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

from ..errors import RewardsteerError

try:
    from rdkit import Chem, RDLogger
    from rdkit.Chem import QED, Crippen, Descriptors, Lipinski, rdMolDescriptors
except ImportError:  # pragma: no cover - exercised only without the extra
    raise RewardsteerError("molecules need RDKit: pip install 'rewardsteer[molecules]' (or `make dev`)") from None

RDLogger.DisableLog("rdApp.*")  # invalid SMILES are expected and counted, not printed
PROPERTIES = ("qed", "logp", "sa", "mw", "penalized_logp", "rings")


def mol(smiles: str):
    """An RDKit molecule, or None for an empty or invalid SMILES."""
    return Chem.MolFromSmiles(smiles) if smiles else None


def canonical(smiles: str) -> str | None:
    """RDKit's canonical SMILES, or None if invalid."""
    m = mol(smiles)
    return Chem.MolToSmiles(m) if m is not None else None


@functools.cache
def _sascorer():
    """RDKit's Contrib SA scorer, imported from the RDKit installation itself."""
    path = Path(importlib.util.find_spec("rdkit").origin).parent / "Contrib" / "SA_Score"
    if not (path / "sascorer.py").is_file():
        raise RewardsteerError(f"RDKit's SA_Score contrib is missing ({path}); reinstall rdkit from PyPI")
    if str(path) not in sys.path:
        sys.path.append(str(path))
    import sascorer

    sascorer.readFragmentScores()  # RDKit's own fragment table, loaded once
    return sascorer


def qed(m) -> float:
    return float(QED.qed(m))


def logp(m) -> float:
    return float(Crippen.MolLogP(m))


def sa(m) -> float:
    return float(_sascorer().calculateScore(m))


def mw(m) -> float:
    return float(Descriptors.MolWt(m))


def rings(m) -> float:
    return float(m.GetRingInfo().NumRings())


def tpsa(m) -> float:
    return float(Descriptors.TPSA(m))


def hbd(m) -> float:
    return float(Lipinski.NumHDonors(m))


def rotatable_bonds(m) -> float:
    return float(rdMolDescriptors.CalcNumRotatableBonds(m))


def aromatic_rings(m) -> float:
    return float(rdMolDescriptors.CalcNumAromaticRings(m))


def penalized_logp(m) -> float:
    large = max((len(r) for r in m.GetRingInfo().AtomRings()), default=0)
    return logp(m) - sa(m) - max(large - 6, 0)


ORACLES = {"qed": qed, "logp": logp, "sa": sa, "mw": mw, "penalized_logp": penalized_logp, "rings": rings}


def properties(smiles: str) -> dict[str, float] | None:
    """Every property of one molecule, or None if the SMILES is invalid."""
    m = mol(smiles)
    if m is None:
        return None
    return {name: fn(m) for name, fn in ORACLES.items()}
