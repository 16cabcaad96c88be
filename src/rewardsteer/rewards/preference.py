"""Reward models from preference pairs: Bradley-Terry training of small CNNs, single or as an ensemble.

Notation: pairs (a_j, b_j) with a_j preferred; r_θ the reward network. Bradley & Terry (1952) model
P(a ≻ b) = σ(r_θ(a) − r_θ(b)); training minimises −log σ(r_θ(a_j) − r_θ(b_j)) over the pairs (Christiano et al.
2017; Ouyang et al. 2022). Ensembles differ by initialization seed, and optionally train on bootstrap
resamples of the pairs (Coste et al. 2024 found seeds alone give enough diversity). A BT reward is defined up
to a constant, so calibrate (standardize) members before aggregating them.

Pairs file: safetensors with tensors `preferred` and `rejected`, each (N, C, H, W) images in [0, 1], row j of
`preferred` preferred to row j of `rejected`; `make_pairs` builds them from samples and a scoring function and
`save_pairs` writes them. `load_bt` reads the trained models back as a reward.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from ..bundled.nets import Classifier
from ..bundled.training import save_model
from ..core import Reward, input_for
from ..errors import RewardsteerError, WeightsError
from ..safety import check_file_name, load_safetensors
from .base import Ensemble

KIND = "bradley-terry reward"


def reward_net(width: int = 8, feature_dim: int = 32) -> Classifier:
    """The small CNN scoring one image: the classifier body with a single output and no dropout."""
    return Classifier(width=width, feature_dim=feature_dim, num_classes=1, dropout=0.0)


class BTReward(Reward):
    """r_θ(x) of a Bradley-Terry reward network (one scalar per image; the condition is ignored)."""

    def __init__(self, net: torch.nn.Module, name: str):
        self.net, self.name, self.differentiable = net, name, True

    def score(self, samples: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.from_output(self.net(input_for(self.net, samples)), samples, cond)

    def from_output(self, out: torch.Tensor, samples: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return out[:, 0].float()


def check_pairs(a: torch.Tensor, b: torch.Tensor, where: str = "pairs") -> None:
    """Matching (N, C, H, W) shapes with N >= 2, finite, in [0, 1]: what `train-reward` accepts."""
    if a.shape != b.shape or a.ndim != 4 or a.shape[0] < 2:
        raise RewardsteerError(f"{where}: 'preferred' {tuple(a.shape)} and 'rejected' {tuple(b.shape)} must both be "
                               "(N, C, H, W) with N >= 2")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()) or min(a.min(), b.min()) < 0 or \
            max(a.max(), b.max()) > 1:
        raise RewardsteerError(f"{where}: images must lie in [0, 1]")


def load_pairs(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(preferred, rejected) from a pairs file, checked for matching shapes and the [0, 1] range."""
    t = load_safetensors(path)
    missing = {"preferred", "rejected"} - set(t)
    if missing:
        raise RewardsteerError(f"{path} lacks tensor(s) {sorted(missing)}; expected 'preferred' and 'rejected', "
                               f"each (N, C, H, W) in [0, 1]; found {sorted(t)}")
    a, b = t["preferred"].float(), t["rejected"].float()
    check_pairs(a, b, str(path))
    return a, b


def save_pairs(path: str | Path, preferred: torch.Tensor, rejected: torch.Tensor) -> Path:
    """Write a pairs file for `rewardsteer train-reward`: safetensors with float32 tensors `preferred` and
    `rejected`, each (N, C, H, W) in [0, 1]; row j of `preferred` was preferred to row j of `rejected`."""
    a, b = preferred.detach().float().cpu().contiguous(), rejected.detach().float().cpu().contiguous()
    check_pairs(a, b)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"preferred": a, "rejected": b}, str(path))
    return path


@torch.no_grad()
def make_pairs(samples: torch.Tensor, score_fn, *, pairs: int | None = None, flip: float = 0.0,
               temperature: float | None = None, cond: Any = None, seed: int = 0,
               batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Preference pairs (preferred, rejected) from samples and a scoring function, as `train-reward` reads them.

    `score_fn` is a Reward or any callable `fn(samples, cond)` / `fn(samples)` -> (N,) scores (scored `batch` at a
    time, without gradients). Samples are paired at random: N // 2 disjoint pairs, or `pairs=M` pairs of two
    distinct samples each. In each pair the higher score is preferred — or, with `temperature` T, the first
    is preferred with the Bradley-Terry probability σ((s_a − s_b)/T) (Bradley & Terry 1952) — and then a
    fraction `flip` of the labels is flipped at random (simulated annotator noise, as in Gao et al. 2023 and
    Coste et al. 2024). Ties go to either side at random. Seeded by `seed`; the global RNG is left alone.
    Write them with `save_pairs`.
    """
    from ..wrap import takes_cond

    if not isinstance(samples, torch.Tensor) or samples.ndim < 2 or samples.shape[0] < 2:
        raise RewardsteerError("make_pairs needs a tensor of at least 2 samples, (N, ...)")
    if not 0 <= flip <= 1:
        raise RewardsteerError(f"make_pairs: flip is the fraction of labels flipped, in [0, 1]; got {flip}")
    if temperature is not None and not temperature > 0:
        raise RewardsteerError(f"make_pairs: temperature must be > 0, got {temperature}")
    n = samples.shape[0]
    if isinstance(score_fn, Reward):
        call = score_fn
    elif callable(score_fn):
        call = score_fn if takes_cond(score_fn) else (lambda x, c: score_fn(x))
    else:
        raise RewardsteerError(f"make_pairs needs a scoring function fn(samples[, cond]) -> (N,); got "
                               f"{type(score_fn).__name__}")
    scores = []
    for i in range(0, n, batch):
        c = cond[i:i + batch] if isinstance(cond, torch.Tensor) and cond.ndim > 0 and cond.shape[0] == n else cond
        s = torch.as_tensor(call(samples[i:i + batch], c))
        if s.shape != (min(batch, n - i),):
            raise RewardsteerError(f"make_pairs: the scoring function returned shape {tuple(s.shape)} for a batch of "
                                   f"{min(batch, n - i)}; expected one score per sample")
        scores.append(s.detach().double().cpu())
    s = torch.cat(scores)
    if not torch.isfinite(s).all():
        raise RewardsteerError(f"make_pairs: {int((~torch.isfinite(s)).sum())} sample(s) scored NaN/inf")
    g = torch.Generator().manual_seed(seed)
    if pairs is None:
        perm = torch.randperm(n, generator=g)[: 2 * (n // 2)]
        i, j = perm[0::2], perm[1::2]
    else:
        if not isinstance(pairs, int) or pairs < 1:
            raise RewardsteerError(f"make_pairs: pairs must be a positive integer, got {pairs!r}")
        i = torch.randint(0, n, (pairs,), generator=g)
        j = (i + torch.randint(1, n, (pairs,), generator=g)) % n  # a distinct partner
    u = torch.rand(i.shape[0], generator=g, dtype=torch.float64)
    if temperature is None:
        tie = torch.rand(i.shape[0], generator=g) < 0.5
        first = (s[i] > s[j]) | ((s[i] == s[j]) & tie)
    else:
        first = u < torch.sigmoid((s[i] - s[j]) / temperature)
    first ^= torch.rand(i.shape[0], generator=g) < flip
    a, b = torch.where(first, i, j), torch.where(first, j, i)
    idx_a, idx_b = a.to(samples.device), b.to(samples.device)
    return samples[idx_a], samples[idx_b]


@torch.no_grad()
def pairwise_accuracy(reward, preferred: torch.Tensor, rejected: torch.Tensor, batch: int = 500) -> float:
    """Fraction of pairs with r(preferred) > r(rejected) (ties count half)."""
    wins = 0.0
    for i in range(0, preferred.shape[0], batch):
        d = reward(preferred[i:i + batch], None) - reward(rejected[i:i + batch], None)
        wins += float((d > 0).sum() + 0.5 * (d == 0).sum())
    return wins / preferred.shape[0]


def train_bradley_terry(preferred: torch.Tensor, rejected: torch.Tensor, *, seed: int = 0, epochs: int = 10,
                        batch: int = 64, lr: float = 2e-3, weight_decay: float = 1e-4, bootstrap: bool = False,
                        width: int = 8, feature_dim: int = 32, log=None) -> torch.nn.Module:
    """One reward network fitted to the pairs; deterministic given `seed` (the global RNG is left as it was)."""
    if not 0 < lr < math.inf or not 0 <= weight_decay < math.inf:
        raise RewardsteerError(f"train_bradley_terry needs a finite lr > 0 and weight_decay >= 0; got {lr}, {weight_decay}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = reward_net(width, feature_dim)
    gen = torch.Generator().manual_seed(seed)
    n = preferred.shape[0]
    # a bootstrap member sees n pairs drawn with replacement; a seed member sees all pairs in its own order
    idx = torch.randint(0, n, (n,), generator=gen) if bootstrap else torch.arange(n)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    net.train()
    for epoch in range(epochs):
        perm = idx[torch.randperm(n, generator=gen)]
        total = 0.0
        for i in range(0, n, batch):
            j = perm[i:i + batch]
            m = j.shape[0]
            r = net(torch.cat([preferred[j], rejected[j]]))[:, 0]  # one pass: BatchNorm sees both sides
            loss = -F.logsigmoid(r[:m] - r[m:]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * m
        if log is not None:
            log(seed=seed, epoch=epoch, loss=round(total / n, 4))
    return net.eval().requires_grad_(False)


def split_pairs(preferred, rejected, heldout_fraction: float = 0.1, seed: int = 0):
    """(train_a, train_b, held_a, held_b): a fixed random split, so held-out accuracy measures generalization."""
    n = preferred.shape[0]
    n_held = max(1, round(heldout_fraction * n)) if heldout_fraction > 0 else 0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    tr, he = perm[n_held:], perm[:n_held]
    return preferred[tr], rejected[tr], preferred[he], rejected[he]


def train_ensemble(preferred, rejected, *, members: int = 1, seed: int = 0, bootstrap: bool = False,
                   heldout_fraction: float = 0.1, **knobs) -> tuple[list[torch.nn.Module], list[dict]]:
    """`members` networks (seeds seed, seed+1, ...) and, per member, held-out pairwise accuracy before/after."""
    a, b, ha, hb = split_pairs(preferred, rejected, heldout_fraction, seed)
    nets, metrics = [], []
    for k in range(members):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + k)
            untrained = BTReward(reward_net(knobs.get("width", 8), knobs.get("feature_dim", 32)).eval(), "init")
        net = train_bradley_terry(a, b, seed=seed + k, bootstrap=bootstrap, **knobs)
        m = {"train_pairs": int(a.shape[0]), "heldout_pairs": int(ha.shape[0]),
             "train_accuracy": pairwise_accuracy(BTReward(net, "r"), a, b)}
        if ha.shape[0]:
            m.update(heldout_accuracy=pairwise_accuracy(BTReward(net, "r"), ha, hb),
                     heldout_accuracy_untrained=pairwise_accuracy(untrained, ha, hb))
        nets.append(net)
        metrics.append(m)
    return nets, metrics


def read_bt_card(path: Path) -> dict:
    """The card `NAME.json` beside `NAME.safetensors`, checked to be a Bradley-Terry card; one line otherwise."""
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        raise WeightsError(f"{path} has no card {card_path.name}; train it with `rewardsteer train-reward`")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise WeightsError(f"{card_path}: not a readable card ({' '.join(str(e).split())[:200]})") from None
    arch = card.get("architecture") if isinstance(card, dict) else None
    if not isinstance(arch, dict) or card.get("kind") != KIND or arch.get("class") != "Classifier":
        what = f"kind={card.get('kind')!r}" if isinstance(card, dict) else f"a JSON {type(card).__name__}"
        raise WeightsError(f"{card_path} is not a {KIND} card ({what})")
    if not isinstance(arch.get("config"), dict):
        raise WeightsError(f"{card_path}: the card's architecture has no config object")
    return card


def load_bt_network(path: str | Path) -> torch.nn.Module:
    """A reward network from `NAME.safetensors` and its card `NAME.json` (written by `train-reward`)."""
    path = Path(path)
    config = read_bt_card(path)["architecture"]["config"]
    try:
        net = Classifier(**config)
    except (TypeError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path.with_suffix('.json')}: the card's config does not build the network: "
                           f"{' '.join(str(e).split())[:200]}") from None
    try:
        net.load_state_dict(load_safetensors(path))
    except RuntimeError as e:
        raise WeightsError(f"{path} does not match its card: {' '.join(str(e).split())[:200]}") from None
    return net.eval().requires_grad_(False)


def load_bt(path: str | Path) -> Reward:
    """Bradley-Terry reward models written by `rewardsteer train-reward --out DIR` as a reward (`models.load_bt`;
    the CLI's `--reward bt:PATH`): a `NAME.safetensors` file (with its card `NAME.json` beside it) -> one
    `BTReward` r_θ(x); a folder -> an `Ensemble` (mean) of every BT model in it, members named by file, so
    aggregates (`.with_transform(rs.aggregates.wco())`) and `.calibrated(generator)` apply. Differentiable;
    the condition is ignored. Example: `rs.best_of_n(models.onestep(), models.load_bt("runs/bt"), candidates=64)`."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.safetensors") if _is_bt(p.with_suffix(".json")))
        if not files:
            raise WeightsError(f"no {KIND} models (NAME.safetensors + NAME.json) in {path}")
        members = [BTReward(load_bt_network(p), p.stem) for p in files]
        return members[0] if len(members) == 1 else Ensemble(members, name=path.name or "bt")
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise WeightsError(f"no {KIND} model at {path}: give a NAME.safetensors written by `rewardsteer train-reward` "
                           "(its card NAME.json beside it) or their folder")
    return BTReward(load_bt_network(path), path.stem)


def _is_bt(card: Path) -> bool:
    """Whether a card beside a weight file claims to be a BT card (a card that does not parse is one, so that
    loading names it instead of skipping it)."""
    try:
        data = json.loads(card.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return card.is_file()
    return not isinstance(data, dict) or data.get("kind") == KIND


def train_and_save(preferred, rejected, out_dir: str | Path, name: str = "bt", *, members: int = 1, seed: int = 0,
                   bootstrap: bool = False, heldout_fraction: float = 0.1, source: str = "", **knobs) -> list[dict]:
    """Train `members` BT models and write each as `NAME[-i].safetensors` + card; returns their cards' metrics."""
    check_file_name(name, "name")
    nets, metrics = train_ensemble(preferred, rejected, members=members, seed=seed, bootstrap=bootstrap,
                                   heldout_fraction=heldout_fraction, **knobs)
    for k, net in enumerate(nets):  # a diverged member: nothing is saved
        if not all(bool(torch.isfinite(t).all()) for t in net.state_dict().values() if t.is_floating_point()):
            raise RewardsteerError(f"member {k} diverged (non-finite weights, lr {knobs.get('lr', 2e-3):g}); nothing "
                                   f"was saved to {out_dir}: lower --lr")
    for k, (net, m) in enumerate(zip(nets, metrics)):
        save_model(net, Path(out_dir), name if members == 1 else f"{name}-{k}", {
            "kind": KIND, "role": "reward model r(x) trained on preference pairs (Bradley-Terry loss)",
            "data": {"pairs": source, "n_pairs": int(preferred.shape[0]), "heldout_fraction": heldout_fraction},
            "training": {"seed": seed + k, "bootstrap": bootstrap, **knobs}, "metrics": m})
    return metrics
