"""Hard targets whose gold no network judges: a digit class plus analytic attribute ranges, and rare
multi-property molecules under RDKit.

An image target's **gold** (`ImageGold`): every held-out judge (`mnist-judge`, `mnist-judge-vit`,
`mnist-judge-rff`) names the target class with probability ≥ 0.9, every analytic attribute (`bench.attributes`:
stroke thickness, slant, height, width) is in its range, realism (`mnist-realism`) is at least its 5%
quantile over the 10k real test digits, so 95% of real digits pass and a hacked blob fails, and the brightest pixel
is at least PEAK_LOW. The last gate closes a hack the others miss: the attributes read ink as pixels > 0.5, so a
dimmed digit reads thin (a real 0 dimmed to 0.7 meets thin-0 2.4 times as often; dimmed below 0.5 it has no ink
and thickness 0), and the realism monitor and the judges accept dimmed digits. Every one of the 70k MNIST digits
has a peak of at least 0.992, and all but 1 of 100,000 prior samples at least 0.9.
Its **objective** (`image_objective`) is what methods optimize and can be fooled: log p(class | x) under the
mixed CNN + MLP proxies, minus the distance of the learned attribute regressor's reading (`mnist-attr-proxy`)
from each range, in units of that attribute's spread over real digits.

Each target's rate under the unsteered prior was measured on 100,000 samples of mnist-onestep (cond=None) and on
the 10k real test digits by `benchmarks/targets.py` (docs/benchmarks/targets.json): every one is at most 1/1,000
under the prior while real digits meet it 0.3–1%.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core import Reward
from ..errors import RewardsteerError, UnknownNameError
from ..rewards.base import WeightedSum
from .attributes import measure
from .leaderboard import pairwise_mean

CONFIDENT = 0.9  # every held-out judge's max probability, on the same class
REALISM_LOW = -1.404  # 5% quantile of mnist-realism over the 10k MNIST test digits (docs/benchmarks/targets.json)
PEAK_LOW = 0.9  # the brightest pixel of a success (module docstring)
RANGE_WEIGHT = 1.0  # objective: nats of class log-probability per real-digit sd outside an attribute range


@dataclass(frozen=True)
class Target:
    """A digit `klass` whose analytic attributes lie in `ranges` ({name: (low or None, high or None)})."""

    name: str
    klass: int
    ranges: dict = field(default_factory=dict)
    description: str = ""

    def in_range(self, attrs: dict[str, torch.Tensor]) -> torch.Tensor:
        return within(attrs, self.ranges)


def within(values: dict[str, torch.Tensor], ranges: dict) -> torch.Tensor:
    """(N,) bool: every `values[name]` in its closed range {name: (low or None, high or None)} (NaN fails any
    bound): the attribute rule of image targets and the property rule of molecule targets."""
    ok = torch.ones_like(next(iter(values.values())), dtype=torch.bool)
    for name, (lo, hi) in ranges.items():
        if name not in values:
            raise UnknownNameError("attribute", name, list(values))
        if lo is not None:
            ok &= values[name] >= lo
        if hi is not None:
            ok &= values[name] <= hi
    return ok


IMAGE_TARGETS = {t.name: t for t in (
    Target("thin-0", 0, {"thickness": (None, 2.0)}, "a thin 0 (stroke width <= 2 px)"),
    Target("flat-wide-0", 0, {"width": (20, None), "height": (None, 16)}, "a flat, wide 0"),
    Target("steep-right-1", 1, {"slant": (0.65, None)}, "a 1 leaning strongly right (about 33 degrees)"),
    Target("left-1", 1, {"slant": (None, -0.17)}, "a 1 leaning left"),
    Target("short-2", 2, {"height": (None, 15)}, "a short 2 (height <= 15 px)"),
    Target("thin-left-3", 3, {"thickness": (None, 2.2), "slant": (None, -0.15)}, "a thin 3 leaning left"),
    Target("thin-8", 8, {"thickness": (None, 1.5)}, "a thin 8 (stroke width <= 1.5 px)"),
    Target("left-9", 9, {"slant": (None, -0.45)}, "a 9 leaning strongly left"),
)}


RANGED = ("thickness", "slant", "height", "width", "ink", "area")


def image_target(spec: str) -> Target:
    """A named target (`IMAGE_TARGETS`), or your own as CLASS:ATTR<=V,ATTR>=V (e.g. `3:thickness<=2,slant<=-0.15`)."""
    if spec in IMAGE_TARGETS:
        return IMAGE_TARGETS[spec]
    head, sep, tail = spec.partition(":")
    if not (sep and head.isdigit() and 0 <= int(head) <= 9):
        raise UnknownNameError("image target", spec, [*IMAGE_TARGETS, "CLASS:ATTR<=V,ATTR>=V"])
    ranges: dict[str, list] = {}
    for part in filter(None, (s.strip() for s in tail.split(","))):
        op = "<=" if "<=" in part else ">=" if ">=" in part else None
        attr, _, value = part.partition(op) if op else (part, "", "")
        if attr.strip() not in RANGED:
            raise UnknownNameError("attribute", attr.strip(), RANGED)
        try:
            v = float(value)
        except ValueError:
            raise RewardsteerError(f"target '{spec}': '{part}' is not ATTR<=NUMBER or ATTR>=NUMBER") from None
        lo, hi = ranges.setdefault(attr.strip(), [None, None])
        ranges[attr.strip()] = [v, hi] if op == ">=" else [lo, v]
    if not ranges:
        raise RewardsteerError(f"target '{spec}' names no attribute range (e.g. 3:thickness<=2)")
    return Target(spec, int(head), {a: tuple(r) for a, r in ranges.items()}, f"a {head} with {tail}")


class ImageGold:
    """The success rule of image targets: judges, analytic attributes and realism (module docstring)."""

    def __init__(self):
        from .. import models

        self.judges = [models.classifier(n) for n in models.HELDOUT_JUDGES]
        self.realism = models.realism_monitor()

    @torch.no_grad()
    def judged_class(self, images: torch.Tensor) -> torch.Tensor:
        """(N,) the class every judge names with probability >= CONFIDENT, or -1."""
        x = images.float()
        out = None
        for net in self.judges:
            p = torch.softmax(net(x).float(), dim=1)
            conf, cls = p.max(1)
            cls = torch.where(conf >= CONFIDENT, cls, -1)
            out = cls if out is None else torch.where(out == cls, out, -1)
        return out

    @torch.no_grad()
    def measure(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the rule reads, per image: `cls` (`judged_class`), `realism`, `peak` (the brightest pixel) and every
        analytic attribute."""
        images = images.float().clamp(0, 1)
        return {"cls": self.judged_class(images), "realism": self.realism.score(images),
                "peak": images.flatten(1).amax(1), **measure(images)}

    @staticmethod
    def meets(stats: dict[str, torch.Tensor], target: Target, realism_low: float = REALISM_LOW) -> torch.Tensor:
        """(N,) bool from `measure`'s output: judged class, realism at least `realism_low`, peak at least PEAK_LOW,
        attributes in range."""
        ok = (stats["cls"] == target.klass) & (stats["realism"] >= realism_low) & (stats["peak"] >= PEAK_LOW)
        return ok & target.in_range(stats)

    def __call__(self, images: torch.Tensor, target: Target) -> torch.Tensor:
        return self.meets(self.measure(images), target)


class AttributeRange(Reward):
    """Minus the distance of a learned attribute reading from [low, high], in units of `scale` (differentiable:
    the hackable stand-in for the analytic gold)."""

    differentiable = True

    def __init__(self, regressor: torch.nn.Module, attribute: str, low, high, scale: float):
        self.net, self.attribute, self.low, self.high, self.scale = regressor, attribute, low, high, scale
        self.name = f"{attribute}-in-range"

    def score(self, samples: torch.Tensor, cond=None) -> torch.Tensor:
        value = self.net.attribute(samples.float(), self.attribute)
        below = (self.low - value).clamp(min=0) if self.low is not None else torch.zeros_like(value)
        above = (value - self.high).clamp(min=0) if self.high is not None else torch.zeros_like(value)
        return -(below + above) / self.scale

    def to(self, device):
        self.net.to(device)
        return self


def image_objective(target: Target) -> Reward:
    """log p(class | x) under the mixed proxies, plus each attribute's range penalty (a WeightedSum, so every
    member's score stays visible)."""
    from .. import models

    regressor = models.attribute_regressor()
    members = {"class": (models.mixed_proxy_ensemble(target=target.klass), 1.0)}
    for a, (lo, hi) in target.ranges.items():
        members[a] = (AttributeRange(regressor, a, lo, hi, float(regressor.spread(a))), RANGE_WEIGHT)
    return WeightedSum(members, name=f"objective:{target.name}")


def real_diversity(features, images: torch.Tensor, labels: torch.Tensor, target: Target, gold: ImageGold) -> float:
    """Mean pairwise feature distance of the real test digits that meet `target` (NaN for fewer than two)."""
    keep = gold(images, target) & (labels == target.klass)
    return pairwise_mean(features(images[keep]))
