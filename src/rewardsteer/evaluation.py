"""Judge-based quality metrics: class accuracy, confidence, and a Fréchet distance in judge features.

The Fréchet distance follows FID (Heusel et al. 2017) with `mnist-judge`'s penultimate features in place
of Inception's: ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁^½ Σ₂ Σ₁^½)^½).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


@torch.no_grad()
def judge_outputs(judge, images: torch.Tensor, batch: int = 500):
    """(features (N, D), probabilities (N, 10)) of the judge on [0, 1] images."""
    feats, probs = [], []
    for i in range(0, images.shape[0], batch):
        f = judge.features(images[i:i + batch].float())
        feats.append(f)
        probs.append(F.softmax(judge.head(f), dim=1))
    return torch.cat(feats), torch.cat(probs)


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D), in float64."""
    a, b = a.double(), b.double()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = torch.cov(a.T), torch.cov(b.T)
    r1 = _sqrtm_psd(s1)
    cross = torch.linalg.eigvalsh(r1 @ s2 @ r1).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * cross)


def class_metrics(judge, images: torch.Tensor, labels: torch.Tensor, reference_features: torch.Tensor | None = None):
    """Judge accuracy on the requested labels, mean confidence in the requested class, and (optionally)
    the Fréchet distance of the images' judge features to `reference_features`."""
    feats, probs = judge_outputs(judge, images)
    labels = labels.to(probs.device)
    out = {"judge_accuracy": float((probs.argmax(1) == labels).float().mean()),
           "judge_confidence": float(probs.gather(1, labels[:, None]).mean()), "n": int(labels.numel())}
    if reference_features is not None:
        out["frechet_judge"] = frechet_distance(feats, reference_features)
    return out
