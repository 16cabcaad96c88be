"""`Result`: what every method returns, and its round trip to disk (result.json + tensors.safetensors)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .hub import load_safetensors
from .monitor import check

JUDGE_HIT_SUFFIX, JUDGES_AGREE = "/acc", "judges_agree"  # written by methods.common.score_heldout


@dataclass
class Result:
    """Best samples with the noises that made them, per-member scores, a trace, and the compute spent.

    samples: (k, C, H, W) in [0, 1]; noises: (k, *noise_shape); scores: (k,) optimized objective;
    member_scores / heldout_scores: {name: (k,)}; initial_*: the same for the unsteered starting point;
    trace: one dict of floats per iteration; spent: Meter.spent(); stopped: "completed", "budget:<what>",
    "interrupted", "callback" or "error: ...".
    """

    method: str
    samples: torch.Tensor
    noises: torch.Tensor
    scores: torch.Tensor
    member_scores: dict[str, torch.Tensor]
    heldout_scores: dict[str, torch.Tensor]
    initial_samples: torch.Tensor
    initial_scores: torch.Tensor
    initial_heldout: dict[str, torch.Tensor]
    trace: list[dict]
    spent: dict
    stopped: str = "completed"
    config: dict = field(default_factory=dict)

    @property
    def best(self) -> torch.Tensor:
        """The single best sample (C, H, W)."""
        return self.samples[int(torch.nan_to_num(self.scores, nan=-math.inf).argmax())]

    @property
    def overoptimization(self) -> dict:
        """The over-optimization monitor's verdict on the trace: {"alarm": bool, ...} (see `monitor.check`)."""
        return check(self.trace, self.config)

    def summary(self) -> dict:
        """Initial -> final mean objective and held-out scores, and the cost: what the CLI prints."""
        def mean(t):
            return float(t.float().mean()) if t.numel() else float("nan")
        before_after = {k: [mean(self.initial_heldout[k]), mean(v)] for k, v in self.heldout_scores.items()}
        judges = {k[:-len(JUDGE_HIT_SUFFIX)]: v for k, v in before_after.items() if k.endswith(JUDGE_HIT_SUFFIX)}
        out = {"method": self.method, "stopped": self.stopped,
               "score": [mean(self.initial_scores), mean(self.scores)],
               "heldout": {k: v for k, v in before_after.items() if k != JUDGES_AGREE and not k.endswith(JUDGE_HIT_SUFFIX)},
               "spent": self.spent, "overoptimization_alarm": self.overoptimization["alarm"]}
        if judges:  # each judge's accuracy on the target, and the fraction every judge assigns to it
            out.update(judges=judges, judges_agree=before_after[JUDGES_AGREE])
        return out

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {"samples": self.samples, "noises": self.noises, "scores": self.scores,
                   "initial_samples": self.initial_samples, "initial_scores": self.initial_scores}
        tensors.update({f"member/{k}": v for k, v in self.member_scores.items()})
        tensors.update({f"heldout/{k}": v for k, v in self.heldout_scores.items()})
        tensors.update({f"initial_heldout/{k}": v for k, v in self.initial_heldout.items()})
        save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(out / "tensors.safetensors"))
        meta = {"method": self.method, "stopped": self.stopped, "config": self.config, "spent": self.spent,
                "summary": self.summary(), "scores": self.scores.tolist(),
                "member_scores": {k: v.tolist() for k, v in self.member_scores.items()},
                "heldout_scores": {k: v.tolist() for k, v in self.heldout_scores.items()}, "trace": self.trace}
        (out / "result.json").write_text(json.dumps(meta, indent=1, default=_jsonable) + "\n")
        return out

    @classmethod
    def load(cls, out_dir: str | Path) -> Result:
        out = Path(out_dir)
        meta = json.loads((out / "result.json").read_text())
        t = load_safetensors(out / "tensors.safetensors")

        def group(prefix):
            return {k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)}

        return cls(meta["method"], t["samples"], t["noises"], t["scores"], group("member/"), group("heldout/"),
                   t["initial_samples"], t["initial_scores"], group("initial_heldout/"), meta["trace"],
                   meta["spent"], meta["stopped"], meta["config"])


def _jsonable(obj: Any):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)
