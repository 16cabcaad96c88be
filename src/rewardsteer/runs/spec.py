"""`RunSpec`: one validated, JSON-round-trippable description of a steering run.

The CLI's `rewardsteer run` options, a line of a batch jobs file and the web page's form are three spellings of
it: `RunSpec.from_dict({"class": 3, "method": "best_of_n", "max_nfe": 64})` is `rewardsteer run --class 3
--method best_of_n --max-nfe 64`. Every field's metadata (its key, help, range, choices, --help section) lives
here, once: the CLI builds its options from it, batch and the page validate through it.

A field left at None means "the model's own default" (e.g. `steps`: 8 ODE steps for mnist-flow, 32 for
moses-mdlm, 1 for a --pipeline one-step generator); the builders in this package resolve it. `to_dict()` writes
the fields given explicitly or set to something other than their default: a batch job's id is its hash.
No torch here: `rewardsteer --help` stays fast.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..errors import RewardsteerError

# CLI method name -> the library's method (rewardsteer.METHODS); particle methods steer a multi-step sampler
ONE_STEP_METHODS = ("best_of_n", "random_search", "zero_order_search", "reno")
PARTICLE_METHODS = {"fk": "fk_steering", "das": "das", "svdd": "svdd", "trajectory_best_of_n": "trajectory_best_of_n",
                    "guidance": "reward_guidance"}
METHOD_CHOICES = (*ONE_STEP_METHODS, *PARTICLE_METHODS)
GUIDANCE_SCALE = 100.0  # rewardsteer.smc.guidance.DEFAULT_SCALE (not imported: no torch here)
ALIASES = {"generator": "model", "target": "class", "rewards": "reward", "heldouts": "heldout"}
BUDGET_KEYS = {"nfe": "max_nfe", "backward": "max_backward", "reward_calls": "max_reward_calls", "seconds": "max_seconds"}

GEN, REW, METH, RENO, PART, BUDGET, PIPE, AMORT = (
    "Generator and task", "Rewards", "Method", "ReNO (noise optimization)",
    "Particle methods (fk, das, svdd, trajectory_best_of_n, guidance)", "Budget (stop when any is spent)",
    "Diffusers pipeline (instead of --model)", "Amortized (a trained noise map or LoRA adapter)")


def opt(key: str, help: str, section: str, *, low=None, high=None, choices=(), off=None, shown=None) -> dict:
    """A field's metadata: its key in JSON and jobs (`--key` on the command line), help, --help section, range
    [low, high], choices, a bool's off switch (`--raw` for `standardize`) and the default shown in --help."""
    return {"key": key, "help": help, "section": section, "low": low, "high": high, "choices": tuple(choices),
            "off": off, "shown": shown}


@dataclass(frozen=True)
class RunSpec:
    """A steering run: generator, rewards, method, knobs and budget (see `rewardsteer run --help`)."""

    model: str = field(default="mnist-onestep", metadata=opt(
        "model", "mnist-onestep, mnist-flow, or moses-mdlm (molecules: --reward qed|neg_sa|logp|penalized_logp|"
        "qed_sa_mw, --method svdd|fk|best_of_n; see docs/molecules.md)", GEN))
    steps: int | None = field(default=None, metadata=opt(
        "steps", "sampler steps: mnist-flow's ODE steps (unrolled, checkpointed; default 8), moses-mdlm's denoising "
        "steps (32), a --pipeline's steps (1, or 50 for particle methods)", GEN, low=1))
    target: int = field(default=7, metadata=opt(
        "class", "the digit the classifier rewards score (log p(class | image))", GEN, low=0, high=9))
    condition: str = field(default="none", metadata=opt(
        "condition", "what the generator is asked for: none (any digit: the most room to steer), class (= --class) "
        "or 0-9", GEN))
    rewards: tuple[str, ...] | None = field(default=None, metadata=opt(
        "reward", "reward spec, repeatable (mean of all): proxies[:k], proxies-mixed (CNN + MLP), proxy:mnist-proxy-0, "
        "mnist-judge, bt:DIR; molecules: qed, neg_sa, logp, penalized_logp, qed_sa_mw, proxies-qed[:agg]", REW,
        shown="proxies-mixed; qed for moses-mdlm"))
    heldouts: tuple[str, ...] | None = field(default=None, metadata=opt(
        "heldout", "held-out judge or reward, repeatable; watched, never optimized. 'judges' = mnist-judge, "
        "mnist-judge-vit and mnist-judge-rff (three model families); molecules: gold, valid; 'none' to disable", REW,
        shown="judges; gold for moses-mdlm"))
    robust: str | None = field(default=None, metadata=opt(
        "robust", "average the reward over random transformations (EOT, against reward hacking): a preset "
        "(default, light) or shift=2,rotate=10,scale=0.1,noise=0.05,n=8; 'none' for the raw reward", REW,
        shown="default"))
    aggregate: str | None = field(default=None, metadata=opt(
        "aggregate", "reduce the reward's members: mean, wco, uwo[:lambda], mean_std[:c], quantile:q, cvar:alpha", REW))
    standardize: bool = field(default=False, metadata=opt(
        "standardize", "standardize each member on 256 unsteered samples (mean 0, sd 1) before aggregating", REW,
        off="raw"))
    method: str | None = field(default=None, metadata=opt(
        "method", "the steering method", METH, choices=METHOD_CHOICES, shown="reno; svdd for moses-mdlm"))
    n: int = field(default=4, metadata=opt(
        "n", "outputs kept, for every method (Python: n=): reno/search noises, the best n of best_of_n's candidates, "
        "particle methods' independent slots", METH, low=1))
    iters: int = field(default=50, metadata=opt(
        "iters", "iterations: reno, zero_order_search; rounds of random_search (Python: iters=)", METH, low=1))
    candidates: int = field(default=64, metadata=opt(
        "candidates", "candidates drawn: best_of_n's N; random_search: per round (Python: candidates=)", METH, low=1))
    seed: int = field(default=0, metadata=opt("seed", "random seed of the run", METH))
    reg: float = field(default=0.01, metadata=opt("reg", "reno: prior weight lambda", RENO, low=0))
    lr: float = field(default=5.0, metadata=opt("lr", "reno: learning rate", RENO, low=0))
    optimizer: str = field(default="sgd", metadata=opt("optimizer", "reno: optimizer", RENO, choices=("sgd", "adam")))
    particles: int = field(default=8, metadata=opt(
        "particles", "fk, das, trajectory_best_of_n: particles per sample; svdd: candidates per step", PART, low=1))
    potential: str = field(default="max", metadata=opt(
        "potential", "fk: potential on the x0-prediction's reward", PART, choices=("max", "diff", "sum", "current")))
    lam: float = field(default=10.0, metadata=opt("lam", "fk: lambda, target p(x)·exp(lambda·r(x))", PART))
    alpha: float | None = field(default=None, metadata=opt(
        "alpha", "das: temperature, target p(x)·exp(r(x)/alpha) (default 0.1); svdd: soft selection (default argmax)",
        PART, low=0))
    interval: int = field(default=5, metadata=opt("interval", "fk: steps between potentials", PART, low=1))
    ess_threshold: float = field(default=0.5, metadata=opt(
        "ess_threshold", "fk, das: resample when ESS < threshold·particles", PART, low=0, high=1))
    resampling: str = field(default="systematic", metadata=opt(
        "resampling", "resampling scheme", PART, choices=("systematic", "stratified", "multinomial")))
    scale: float | None = field(default=None, metadata=opt(
        "scale", f"guidance: λ of the step's shift s²·λ·∇r(x̂0) added to each step's mean (default {GUIDANCE_SCALE:g})",
        PART, low=0))
    max_nfe: int | None = field(default=None, metadata=opt("max_nfe", "budget: generator evaluations", BUDGET))
    max_backward: int | None = field(default=None, metadata=opt("max_backward", "budget: backward passes", BUDGET))
    max_reward_calls: int | None = field(default=None, metadata=opt(
        "max_reward_calls", "budget: reward evaluations", BUDGET))
    max_seconds: float | None = field(default=None, metadata=opt("max_seconds", "budget: wall-clock seconds", BUDGET))
    pipeline: str | None = field(default=None, metadata=opt(
        "pipeline", "a diffusers pipeline (hub name or folder) instead of --model; rewards: clip:PATH_OR_ID, "
        "head:FILE.safetensors[@CLIP], suppress:CONCEPT[@CLIP], pickscore:PATH, hps:PATH, jpeg[:Q]", PIPE))
    prompt: str | None = field(default=None, metadata=opt(
        "prompt", "--pipeline: the text prompt (also what clip: rewards score against)", PIPE))
    negative_prompt: str | None = field(default=None, metadata=opt(
        "negative_prompt", "--pipeline: negative prompt (used when --guidance-scale > 1)", PIPE))
    guidance_scale: float | None = field(default=None, metadata=opt(
        "guidance_scale", "--pipeline: classifier-free guidance, or FLUX-dev's embedded guidance (default: the "
        "family's own: 0 for one-step SD/SD3, 7.5 / 7.0 for their samplers, 3.5 for FLUX)", PIPE, low=0))
    height: int | None = field(default=None, metadata=opt(
        "height", "--pipeline: image height (default: the model's)", PIPE, low=8))
    width: int | None = field(default=None, metadata=opt(
        "width", "--pipeline: image width (default: the model's)", PIPE, low=8))
    checkpoint: bool = field(default=False, metadata=opt(
        "checkpoint", "--pipeline: gradient checkpointing of the UNet, VAE and CLIP (less memory, more time)", PIPE,
        off="no_checkpoint"))
    dtype: str = field(default="fp32", metadata=opt(
        "dtype", "the generator's weights (fp16/bf16 on a GPU); bundled rewards and judges stay fp32 and read its "
        "samples cast (--pipeline: the pipeline and CLIP rewards)", GEN, choices=("fp32", "fp16", "bf16")))
    device: str | None = field(default=None, metadata=opt(
        "device", "torch device for the generator, rewards and judges, e.g. cuda, cuda:1, cpu (default: cpu for the "
        "bundled models; cuda if available for --pipeline)", GEN))
    amortized: str | None = field(default=None, metadata=opt(
        "amortized", "a noise network, learned noise or LoRA adapter from `rewardsteer train-noise` / `finetune`, put "
        "in front of (or into) --model for --class; every method then steers the result", AMORT))
    given: frozenset = field(default=frozenset(), compare=False, repr=False)  # keys set explicitly (from_dict)

    def __post_init__(self):
        for f in spec_fields():
            object.__setattr__(self, f.name, coerce(f, getattr(self, f.name)))

    @classmethod
    def from_dict(cls, raw: dict, *, list_separator: str | None = None) -> RunSpec:
        """A spec from job keys (`class`, `reward`, `max_nfe`, ...; aliases `generator`, `target`, `rewards`,
        `heldouts`; `budget: {"nfe": 64}`; a bool's off key such as `raw`); one-line error for anything wrong.
        `list_separator` splits string values of list options (`;` in CSV cells)."""
        if not isinstance(raw, dict):
            raise RewardsteerError(f"a run is a JSON object of `rewardsteer run` options; got {type(raw).__name__}")
        by_key = {f.metadata["key"]: f for f in spec_fields()}
        offs = {f.metadata["off"]: f for f in spec_fields() if f.metadata["off"]}
        raw = dict(raw)
        budget = raw.pop("budget", None)
        if budget is not None:
            if not isinstance(budget, dict) or set(budget) - set(BUDGET_KEYS):
                raise RewardsteerError(f"'budget' is an object with keys from {', '.join(BUDGET_KEYS)}; got {budget!r}")
            for k, v in budget.items():
                raw.setdefault(BUDGET_KEYS[k], v)
        values: dict[str, Any] = {}
        for key, value in raw.items():
            k = str(key).lstrip("-").replace("-", "_")
            k = ALIASES.get(k, k)
            f = by_key.get(k) or offs.get(k)
            if f is None:
                raise RewardsteerError(f"unknown option '{key}'; known: {', '.join(sorted([*by_key, 'budget', *ALIASES]))}")
            if value is None or value == "":
                continue
            if f.name in values:
                raise RewardsteerError(f"'{key}' repeats option '{f.metadata['key']}'")
            if k in offs:  # `raw: true` is `standardize: false`
                value = not as_bool(key, value)
            elif f.type in ("tuple[str, ...] | None",) and isinstance(value, str) and list_separator:
                value = [v.strip() for v in value.split(list_separator) if v.strip()]
            values[f.name] = value
        given = frozenset(by_name()[name].metadata["key"] for name in values)
        return cls(**values, given=given)

    def to_dict(self) -> dict:
        """Job keys -> values: every field given explicitly or different from its default (lists as lists)."""
        out = {}
        for f in spec_fields():
            value = getattr(self, f.name)
            if f.metadata["key"] in self.given or value != f.default:
                out[f.metadata["key"]] = list(value) if isinstance(value, tuple) else value
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): what a batch job's id hashes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise RewardsteerError(f"not valid JSON: {e.msg} (column {e.colno})") from None

    def to_argv(self) -> list[str]:
        """The `rewardsteer run` arguments of this spec (without --out)."""
        args: list[str] = []
        for key, value in self.to_dict().items():
            f = by_key()[key]
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else "--" + f.metadata["off"].replace("_", "-"))
            elif isinstance(value, list):
                for v in value:
                    args += [flag, str(v)]
            else:
                args += [flag, str(value)]
        return args

    def replace(self, **changes) -> RunSpec:
        """A copy with `changes` (attribute names), which count as given."""
        keys = {by_name()[k].metadata["key"] for k in changes}
        return replace(self, **changes, given=self.given | keys)

    @property
    def particle(self) -> bool:
        """Whether the method steers a multi-step sampler's particles."""
        return self.method in PARTICLE_METHODS


def spec_fields():
    return [f for f in fields(RunSpec) if f.name != "given"]


def by_key() -> dict:
    return {f.metadata["key"]: f for f in spec_fields()}


def by_name() -> dict:
    return {f.name: f for f in spec_fields()}


def as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return value.strip().lower() in ("true", "yes", "1", "on")
    raise RewardsteerError(f"{key} takes true or false; got {value!r}")


def coerce(f, value: Any) -> Any:
    """`value` as field `f`'s type, in range and among its choices, or a one-line error naming the option."""
    m, key = f.metadata, "--" + f.metadata["key"].replace("_", "-")
    if value is None:
        if f.default is None:
            return None
        raise RewardsteerError(f"{key} needs a value")
    kind = f.type.split(" |")[0]
    if kind == "bool":
        return as_bool(key, value)
    if kind == "tuple[str, ...]":
        items = [value] if isinstance(value, str | int | float) and not isinstance(value, bool) else value
        if not isinstance(items, list | tuple) or not items or \
                not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in items):
            raise RewardsteerError(f"{key} takes a string or a list of strings; got {value!r}")
        return tuple(str(v) for v in items)
    if isinstance(value, dict | list | tuple | bool):
        raise RewardsteerError(f"{key} takes one {kind} value; got {value!r}")
    if kind == "int":
        value = to_int(key, value)
    elif kind == "float":
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise RewardsteerError(f"{key} takes a number; got {value!r}") from None
        if not math.isfinite(value):
            raise RewardsteerError(f"{key} must be a finite number; got {value}")
    else:
        value = str(value)
    if m["low"] is not None and value < m["low"] or m["high"] is not None and value > m["high"]:
        bounds = (f"{m['low']}<=" if m["low"] is not None else "") + "x" + (f"<={m['high']}" if m["high"] is not None else "")
        raise RewardsteerError(f"{key}: {value} is not in the range {bounds}")
    if m["choices"] and value not in m["choices"]:
        raise RewardsteerError(f"{key}: {value!r} is not one of {', '.join(m['choices'])}")
    return value


def to_int(key: str, value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit() and len(value.strip()) < 20:
        return int(value)
    raise RewardsteerError(f"{key} takes a whole number; got {value!r}")
