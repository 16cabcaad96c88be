"""Sample metrics of MOSES (Polykovskiy et al. 2020, "Molecular Sets (MOSES): A Benchmarking Platform for
Molecular Generation Models", Front. Pharmacol. 11:565644), defined as in its `moses.metrics` (molsets 0.3.1):

- validity: fraction of the SMILES that RDKit parses ('' counts as invalid);
- unique@k: distinct canonical SMILES among the first k valid molecules, over k;
- novelty: fraction of the distinct valid canonical SMILES that are not in the training set;
- IntDiv1: 1 − mean Tanimoto similarity of Morgan fingerprints (radius 2, 1024 bits) over all |A|² ordered
  pairs of the valid molecules, self-pairs included (MOSES's `internal_diversity`, p = 1);
- Wasserstein-1 distances between the QED, logP, SA and MW values of the valid molecules and a reference set;
- FCD: Fréchet ChemNet Distance (Preuer et al. 2018) between ChemNet activations of the valid canonical
  SMILES and of the reference, with the `fcd` package's ChemNet (`pip install fcd==1.2.2`).
Duplicates are kept everywhere except in unique@k and novelty, as in MOSES.
"""

from __future__ import annotations

import functools
import importlib.resources
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from rdkit import DataStructs
from rdkit.Chem import rdFingerprintGenerator

from ..bundled.evaluation import frechet_distance
from ..errors import RewardsteerError
from . import chem

PROPERTIES = {"qed": chem.qed, "logp": chem.logp, "sa": chem.sa, "mw": chem.mw}  # MOSES's four Wasserstein metrics
MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)  # = MOSES's GetMorganFingerprintAsBitVect(m, 2, 1024)


def valid_canonical(smiles: list[str]) -> list[str]:
    """The canonical SMILES of the valid molecules, in order, duplicates kept (MOSES's `remove_invalid`)."""
    return [c for c in map(chem.canonical, smiles) if c is not None]


def validity(smiles: list[str]) -> float:
    """Fraction of the SMILES that are a molecule (MOSES 'Valid')."""
    return len(valid_canonical(smiles)) / len(smiles)


def uniqueness(smiles: list[str], k: int | None = None) -> float:
    """Distinct canonical molecules among the first k valid ones, over their number (MOSES 'Unique@k');
    k = None uses all valid molecules."""
    valid = valid_canonical(smiles)[:k]
    return len(set(valid)) / len(valid)


def novelty(smiles: list[str], train_set: set[str]) -> float:
    """Fraction of the distinct valid canonical SMILES absent from `train_set` (MOSES 'Novelty').

    `train_set` holds canonical SMILES: MOSES's train file already is (RDKit 2026 re-canonicalizes 4,999 of
    5,000 random train SMILES to themselves), so `set(load_moses("train"))` serves."""
    distinct = set(valid_canonical(smiles))
    return len(distinct - train_set) / len(distinct)


def internal_diversity(smiles: list[str], self_pairs: bool = True) -> float:
    """IntDiv1 = 1 − mean Tanimoto similarity over all N² ordered pairs of valid molecules, self-pairs
    included (MOSES 'IntDiv'); `self_pairs=False` averages over the N(N − 1) pairs of distinct entries
    instead (= N/(N − 1) × IntDiv1, the fairer reading for small sets). Exact; O(N²): about 15 s for 10,000
    molecules on one core."""
    fps = [MORGAN.GetFingerprint(chem.mol(s)) for s in valid_canonical(smiles)]
    n = len(fps)
    if n < (1 if self_pairs else 2):
        return float("nan")
    off_diagonal = sum(sum(DataStructs.BulkTanimotoSimilarity(fps[i], fps[i + 1:])) for i in range(n - 1))
    if not self_pairs:
        return 1.0 - 2.0 * off_diagonal / (n * (n - 1))
    return 1.0 - (n + 2.0 * off_diagonal) / n ** 2


def property_values(smiles: list[str]) -> dict[str, np.ndarray]:
    """MOSES's four properties (`PROPERTIES`) of every valid molecule."""
    mols = [chem.mol(s) for s in valid_canonical(smiles)]
    return {name: np.array([fn(m) for m in mols]) for name, fn in PROPERTIES.items()}


def wasserstein(a, b) -> float:
    """Wasserstein-1 distance between two 1-D empirical distributions (scipy's, as MOSES)."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(a, b))


@functools.cache
def chemnet():
    """The ChemNet of the `fcd` package, loaded from its wheel with `torch.load(weights_only=True)` (tensors and
    plain containers only, never arbitrary pickled objects); loaded once."""
    try:
        from fcd.utils import load_imported_model
    except ImportError:
        raise RewardsteerError("FCD needs the `fcd` package: pip install fcd==1.2.2") from None
    with importlib.resources.as_file(importlib.resources.files("fcd") / "ChemNet_v0.13_pretrained.pt") as path:
        return load_imported_model(torch.load(path, weights_only=True)).eval()


def chemnet_activations(smiles: list[str]) -> torch.Tensor:
    """ChemNet's activations (N, 512) for the valid canonical molecules (the `fcd` package's one-hot encoding)."""
    net = chemnet()
    from fcd import get_predictions

    with warnings.catch_warnings():  # fcd 1.2.2 calls the deprecated np.row_stack
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.from_numpy(get_predictions(net, valid_canonical(smiles), n_jobs=0, device="cpu"))  # no worker


@dataclass
class Reference:
    """A reference set (e.g. 10k MOSES test molecules) whose properties and ChemNet activations are computed once."""

    smiles: list[str]

    @functools.cached_property
    def properties(self) -> dict[str, np.ndarray]:
        return property_values(self.smiles)

    @functools.cached_property
    def chemnet_activations(self) -> torch.Tensor:
        return chemnet_activations(self.smiles)


def _reference(reference: list[str] | Reference) -> Reference:
    return reference if isinstance(reference, Reference) else Reference(list(reference))


def property_distances(smiles: list[str], reference: list[str] | Reference) -> dict[str, float]:
    """W1 between the QED, logP, SA and MW of the valid molecules and of the reference (MOSES's property metrics)."""
    ours, theirs = property_values(smiles), _reference(reference).properties
    return {f"wasserstein_{name}": wasserstein(ours[name], theirs[name]) for name in PROPERTIES}


def fcd(generated: list[str], reference: list[str] | Reference) -> float:
    """Fréchet ChemNet Distance between the valid canonical molecules of `generated` and the reference (MOSES
    'FCD/Test' when the reference is the test set). Biased upwards for small sets: compare equal sizes."""
    return frechet_distance(chemnet_activations(generated), _reference(reference).chemnet_activations)


def evaluate_samples(smiles: list[str], train_set: set[str] | None, reference_smiles: list[str] | Reference,
                     ks: tuple[int, ...] = (1000, 10000), with_fcd: bool = True) -> dict:
    """Every metric above for one set of samples: `train_set` (canonical SMILES) for novelty (None skips it),
    `reference_smiles` (e.g. MOSES test; a `Reference` to reuse its statistics) for the property distances and
    FCD. unique@k is reported for the k that the valid molecules reach; with no valid molecule, only validity."""
    reference = _reference(reference_smiles)
    valid = valid_canonical(smiles)
    out = {"n": len(smiles), "validity": len(valid) / len(smiles)}
    if not valid:
        return out
    out["uniqueness"] = uniqueness(valid)
    out.update({f"unique@{k}": uniqueness(valid, k) for k in ks if len(valid) >= k})
    if train_set is not None:
        out["novelty"] = novelty(valid, train_set)
    out["intdiv1"] = internal_diversity(valid)
    out.update(property_distances(valid, reference))
    if with_fcd:
        out["fcd"] = fcd(valid, reference)
    return out
