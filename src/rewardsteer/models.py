"""Ready-to-use bundled models: the flow sampler, the one-step generator, classifiers and their rewards."""

from __future__ import annotations

from .errors import UnknownNameError
from .flow import FlowSampler, OneStepUNet, UnrolledSampler
from .hub import BUNDLED, load_network
from .monitor import BatchDiversity
from .nets import Classifier
from .preference import load_bt
from .rewards import ClassifierReward, Ensemble

CLASSIFIERS = tuple(n for n in BUNDLED if n.startswith(("mnist-judge", "mnist-proxy")))
DEFAULT_GUIDANCE = 2.0


def flow_sampler(num_steps: int = 50, guidance: float = DEFAULT_GUIDANCE, eta: float = 1.0) -> FlowSampler:
    """`mnist-flow` as a stochastic (eta > 0) or deterministic (eta = 0) multi-step sampler."""
    return FlowSampler(load_network("mnist-flow"), num_steps, guidance, eta)


def onestep() -> OneStepUNet:
    """`mnist-onestep`: G(z, class) -> image, differentiable in z."""
    return OneStepUNet(load_network("mnist-onestep"))


def unrolled_flow(num_steps: int = 4, guidance: float = DEFAULT_GUIDANCE, checkpoint: bool = True) -> UnrolledSampler:
    """`mnist-flow` with a few deterministic ODE steps, as a one-step generator for noise optimization."""
    return UnrolledSampler(flow_sampler(num_steps, guidance, eta=0.0), checkpoint=checkpoint)


def classifier(name: str) -> Classifier:
    if name not in CLASSIFIERS:
        raise UnknownNameError("classifier", name, CLASSIFIERS)
    return load_network(name)


def classifier_reward(name: str, target: int | None = None) -> ClassifierReward:
    """log p(class | x) under a bundled classifier (the target defaults to the generation condition)."""
    return ClassifierReward(classifier(name), name, target)


def proxy_ensemble(k: int = 5, target: int | None = None) -> Ensemble:
    """The mean of the first k noisy-label proxies `mnist-proxy-*` (members keep their names)."""
    return Ensemble([classifier_reward(f"mnist-proxy-{i}", target) for i in range(k)], name="proxies")


GENERATORS = ("mnist-onestep", "mnist-flow")


def generator(name: str, steps: int = 8, guidance: float = DEFAULT_GUIDANCE, checkpoint: bool = True):
    """A bundled model as a one-step generator: `mnist-onestep`, or `mnist-flow` unrolled over `steps` ODE steps."""
    if name == "mnist-onestep":
        return onestep()
    if name == "mnist-flow":
        return unrolled_flow(steps, guidance, checkpoint)
    raise UnknownNameError("generator", name, GENERATORS)


def reward_from_spec(spec: str, target: int | None = None):
    """A reward from a short spec: a classifier name (`mnist-judge`, `mnist-proxy-3`), optionally prefixed
    `classifier:` or `proxy:`; `judge`; `proxies[:k]` for the mean of the first k proxies; or `bt:PATH` for
    Bradley-Terry reward models (a `.safetensors` file, or a folder of them as an ensemble)."""
    head, _, tail = spec.partition(":")
    if head == "bt" and tail:
        return load_bt(tail)
    if head in ("classifier", "proxy") and tail:
        return classifier_reward(tail, target)
    if head == "proxies":
        k = int(tail) if tail.isdigit() else 5
        if not 1 <= k <= 5 or (tail and not tail.isdigit()):
            raise UnknownNameError("reward", spec, ["proxies", "proxies:1..5"])
        return proxy_ensemble(k, target)
    if spec == "judge":
        return classifier_reward("mnist-judge", target)
    if spec in CLASSIFIERS:
        return classifier_reward(spec, target)
    raise UnknownNameError("reward", spec, [*CLASSIFIERS, "judge", "proxies[:k]", "proxy:NAME", "bt:PATH"])


def diversity_monitor():
    """Held-out monitor: per sample, the mean distance to the batch's other samples in `mnist-judge` features."""
    return BatchDiversity(classifier("mnist-judge").features, name="diversity")
