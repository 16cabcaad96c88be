"""Judge-based quality metrics: class accuracy, confidence, a Fréchet distance in judge features, and the
unconditional-prior checks (is every sample a confident digit under every judge, are the classes balanced).

`auroc` measures how well a score separates two sets (e.g. real digits from samples).

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


@torch.no_grad()
def probabilities(net, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """(N, 10) class probabilities of any bundled classifier on [0, 1] images."""
    return torch.cat([F.softmax(net(images[i:i + batch].float()).float(), dim=1) for i in range(0, len(images), batch)])


def prior_metrics(judges: dict, images: torch.Tensor, confident: float = 0.9) -> dict:
    """Unconditional samples under each judge: the fraction it classifies with max probability ≥ `confident`,
    and its predicted class shares (a good prior draws every digit about 10% of the time); plus the fraction
    on which every judge is confident and all name the same class."""
    out, preds, sure = {}, [], []
    for name, net in judges.items():
        p = probabilities(net, images)
        conf, cls = p.max(1)
        share = torch.bincount(cls, minlength=p.shape[1]).float() / len(cls)
        out[name] = {"confident": float((conf >= confident).float().mean()),
                     "class_share_min": float(share.min()), "class_share_max": float(share.max()),
                     "class_shares": [round(float(v), 4) for v in share]}
        preds.append(cls)
        sure.append(conf >= confident)
    same = torch.stack(preds).eq(preds[0]).all(0)
    out["all_judges_confident_and_agree"] = float((torch.stack(sure).all(0) & same).float().mean())
    return out


def auroc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Area under the ROC curve of a score separating `pos` from `neg` (higher = more positive): the
    Mann-Whitney U statistic P(s_pos > s_neg) + ½·P(s_pos = s_neg), from mid-ranks of the pooled scores."""
    pos, neg = torch.as_tensor(pos).double().flatten(), torch.as_tensor(neg).double().flatten()
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError("auroc needs at least one positive and one negative score")
    pooled = torch.cat([pos, neg])
    _, inverse, counts = torch.unique(pooled, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mid_ranks = ends - (counts.double() - 1) / 2  # the mean 1-based rank of each tied group
    rank_sum = mid_ranks[inverse[:pos.numel()]].sum()
    u = rank_sum - pos.numel() * (pos.numel() + 1) / 2
    return float(u / (pos.numel() * neg.numel()))
