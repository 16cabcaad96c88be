"""What a web page user may ask the server for (`rewardsteer serve`): the page's own fields, the bundled generators and
rewards (any other name fails the run's own checks, which know only those), budgets up to the server's caps.
Filesystem paths (`bt:PATH` rewards, an `amortized` map, a `pipeline` folder and its reward models) only when the
server was started with `--allow-path DIR`, and only under those folders; a refusal never depends on whether the
file exists, so the page cannot probe the disk."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..errors import RewardsteerError
from ..runs.pipelines import spec_paths
from ..runs.spec import ALIASES, RunSpec

IMAGE_REWARDS = ["proxies-mixed", "proxies", "proxies:3", *(f"mnist-proxy-{i}" for i in range(5)),
                 *(f"mnist-proxy-mlp-{i}" for i in range(3)), "mnist-judge", "mnist-judge-vit", "mnist-judge-rff"]
IMAGE_HELDOUT = ["judges", "mnist-judge", "mnist-judge-vit", "mnist-judge-rff", "none"]
MOLECULE_REWARDS = ["qed", "neg_sa", "logp", "penalized_logp", "qed_sa_mw"]
MOLECULE_HELDOUT = ["gold", "valid", "none"]
AGGREGATES = ["(none)", "mean", "wco", "uwo", "uwo:0.5", "mean_std", "cvar:0.2"]
ROBUST = ["default", "light", "none"]
CONDITIONS = ["none", "class", *map(str, range(10))]

FORM_KEYS = {"model", "class", "condition", "reward", "heldout", "aggregate", "robust", "method", "n", "candidates",
             "iters", "particles", "steps", "max_nfe", "max_seconds", "seed"}
PIPELINE_KEYS = {"pipeline", "prompt", "negative_prompt", "guidance_scale", "height", "width"}
PATH_OFF = "filesystem paths are off on this page (start it with `rewardsteer serve --allow-path DIR` to allow files under DIR)"


def generators() -> list[str]:
    """The bundled generators; moses-mdlm when its weights and RDKit are installed."""
    import importlib.util

    from ..bundled.hub import WEIGHTS_DIR

    names = ["mnist-onestep", "mnist-flow"]
    if (WEIGHTS_DIR / "moses-mdlm.safetensors").is_file() and importlib.util.find_spec("rdkit") is not None:
        names.append("moses-mdlm")
    return names


@dataclass(frozen=True)
class PagePolicy:
    """The server's limits: `allow_paths` (folders whose files the page may name), and caps on a run's NFE, seconds
    and sampler steps (a run that gives no budget gets the caps)."""

    allow_paths: tuple[str, ...] = ()
    max_nfe: int = 20_000
    max_seconds: float = 300.0
    max_steps: int = 100

    def __post_init__(self):
        object.__setattr__(self, "allow_paths", tuple(os.path.realpath(p) for p in self.allow_paths))
        for name in ("max_nfe", "max_seconds", "max_steps"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < math.inf:
                raise RewardsteerError(f"{name} cap must be a positive number; got {value!r}")

    def path(self, value: str, what: str) -> str:
        """`value` if it lies under an allowed folder (symlinks and '..' resolved), else a one-line refusal."""
        if not self.allow_paths:
            raise RewardsteerError(f"{what}: {PATH_OFF}")
        real = os.path.realpath(value)
        if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in self.allow_paths):
            raise RewardsteerError(f"{what}: {value} is outside the folders this page may read (--allow-path)")
        return value

    def confine(self, options: dict) -> dict:
        """The options a page run may use (the page's keys, allowed paths, offered names); one line otherwise."""
        out = {}
        for key, value in options.items():
            k = str(key).lstrip("-").replace("-", "_")
            out[ALIASES.get(k, k)] = value
        pipeline = out.get("pipeline") not in (None, "")
        for key in out:
            if key not in FORM_KEYS and not (key == "amortized" or pipeline and key in PIPELINE_KEYS):
                raise RewardsteerError(f"the page does not take '{key}' (the server decides it)")
        if out.get("amortized") not in (None, ""):
            self.path(str(out["amortized"]), "amortized")
        if pipeline:
            self.path(str(out["pipeline"]), "pipeline")
        self.names(out, pipeline)
        return out

    def capped(self, spec: RunSpec) -> RunSpec:
        """`spec` within the caps (its values as the run reads them); a budget not given becomes the cap."""
        for key, cap, flag in (("max_nfe", self.max_nfe, "--max-nfe-cap"), ("max_seconds", self.max_seconds,
                               "--max-seconds-cap"), ("steps", self.max_steps, "--max-steps-cap")):
            value = getattr(spec, key)
            if value is not None and value > cap:
                raise RewardsteerError(f"{key} {value:g} is above this page's cap of {cap:g} (rewardsteer serve {flag})")
        return spec.replace(max_nfe=spec.max_nfe or int(self.max_nfe), max_seconds=spec.max_seconds or self.max_seconds)

    def names(self, out: dict, pipeline: bool) -> None:
        """Paths in rewards and held-out judges only under the allowed folders, a pipeline's rewards only jpeg or
        models under them (no hub downloads); aggregate, robust and condition from the page's lists. Any other
        name goes on to the run's own checks, which know only the bundled ones (the CLI's messages)."""
        for key in ("reward", "heldout"):
            values = out.get(key) or []
            for v in [values] if isinstance(values, str) else values:
                v = str(v)
                if pipeline:
                    head, _, quality = v.partition(":")
                    if head == "jpeg" and (not quality or quality.isdigit()):
                        continue
                    if not spec_paths(v):
                        raise RewardsteerError(f"{key} '{v}': a pipeline run on this page takes jpeg[:Q] or reward "
                                               "models under --allow-path folders (no hub downloads)")
                    for path, _ in spec_paths(v):
                        self.path(path, f"{key} '{v}'")
                elif v.startswith("bt:"):
                    self.path(v[3:], f"{key} '{v}'")
        for key, allowed in (("aggregate", AGGREGATES), ("robust", ROBUST), ("condition", CONDITIONS)):
            if out.get(key) not in (None, "") and str(out[key]) not in allowed:
                raise RewardsteerError(f"{key} '{out[key]}' is not one this page offers: {', '.join(allowed)}")
