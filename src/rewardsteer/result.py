"""`Result`: what every method returns, and its round trip to disk (result.json + tensors.safetensors)."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .rewards.monitors import JUDGE_HIT_SUFFIX, JUDGES_AGREE, MONITOR_ONLY_PREFIX, batch_row, check
from .safety import load_safetensors


@dataclass
class Result:
    """Best samples with the noises that made them, per-member scores, a trace, and the compute spent.

    samples: (n, C, H, W) in [0, 1]; noises: (n, *noise_shape); scores: (n,) optimized objective;
    member_scores / heldout_scores: {name: (n,)}; initial_*: the same for the unsteered starting point;
    trace: one dict of floats per iteration; spent: Meter.spent(); stopped: "completed", "budget:<what>",
    "interrupted", "callback" or "error: ...". `print(result)` is one line; `print(result.summary())` the
    CLI's summary; `result.save(dir, report=True)` the CLI's files (`files` names them after a run-layer run).
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
    files: dict = field(default_factory=dict, repr=False)  # {name: path} of the files `runs.execute` wrote

    @property
    def best(self) -> torch.Tensor:
        """The single best sample (C, H, W)."""
        return self.samples[int(torch.nan_to_num(self.scores, nan=-math.inf).argmax())]

    @property
    def shortfall(self) -> int:
        """How many fewer outputs than the `n` asked for this run returned (0 when it returned them all)."""
        asked = self.config.get("k", self.config.get("n"))  # "k": best-of-N results saved before "n" meant outputs
        return max(int(asked) - len(self.samples), 0) if isinstance(asked, int) else 0

    @property
    def overoptimization(self) -> dict:
        """The over-optimization monitor's verdict on the trace: {"alarm": bool, ...} (see `monitor.check`).
        Diversity is reported as the summary reports it: the unsteered start's batch against the outputs'."""
        verdict = check(self.trace, self.config, before=batch_row(self.initial_scores, self.initial_heldout),
                        after=batch_row(self.scores, self.heldout_scores))
        for k in verdict:
            if k.startswith(MONITOR_ONLY_PREFIX) and k in self.heldout_scores and k in self.initial_heldout:
                verdict[k] = [_mean(self.initial_heldout[k]), _mean(self.heldout_scores[k])]
        return verdict

    def summary_dict(self) -> dict:
        """Initial -> final mean objective and held-out scores, each judge's accuracy, the cost and the alarm."""
        before_after = {k: [_mean(self.initial_heldout[k]), _mean(v)] for k, v in self.heldout_scores.items()
                        if k in self.initial_heldout}
        judges = {k[:-len(JUDGE_HIT_SUFFIX)]: v for k, v in before_after.items() if k.endswith(JUDGE_HIT_SUFFIX)}
        out = {"method": self.method, "stopped": self.stopped, "outputs": len(self.samples),
               "score": [_mean(self.initial_scores), _mean(self.scores)],
               "heldout": {k: v for k, v in before_after.items() if k != JUDGES_AGREE and not k.endswith(JUDGE_HIT_SUFFIX)},
               "spent": self.spent, "overoptimization_alarm": self.overoptimization["alarm"]}
        if self.shortfall:
            out["shortfall"] = self.shortfall
        if judges:  # each judge's accuracy on the target, and the fraction every judge assigns to it
            out.update(judges=judges, judges_agree=before_after[JUDGES_AGREE])
        return out

    def summary(self) -> Summary:
        """The summary the CLI prints, as text (score, held-out rewards, judges, cost, the monitor); the numbers are
        in `summary_dict()`."""
        from .report import summary_lines

        return Summary("\n".join(summary_lines(self)), self.summary_dict())

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.samples.shape[1:]))
        s = self.summary_dict()
        return (f"Result({self.method}: {len(self.samples)} samples of {shape}, score {s['score'][0]:.3f} -> "
                f"{s['score'][1]:.3f}, {self.stopped}; {self.spent.get('nfe', '?')} NFE, "
                f"{self.spent.get('backward', '?')} backward)")

    def save(self, out_dir: str | Path, report: bool = False) -> Path:
        """Write result.json (config, spent, summary, per-member scores, trace) and tensors.safetensors; with
        `report=True` also grid.png (labelled before/after rows with each sample's score; image samples only)
        and trace.png (scores against NFE). Returns the folder."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {"samples": self.samples, "noises": self.noises, "scores": self.scores,
                   "initial_samples": self.initial_samples, "initial_scores": self.initial_scores}
        tensors.update({f"member/{k}": v for k, v in self.member_scores.items()})
        tensors.update({f"heldout/{k}": v for k, v in self.heldout_scores.items()})
        tensors.update({f"initial_heldout/{k}": v for k, v in self.initial_heldout.items()})
        save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(out / "tensors.safetensors"))
        meta = {"method": self.method, "stopped": self.stopped, "config": self.config, "spent": self.spent,
                "summary": self.summary_dict(), "scores": self.scores.tolist(),
                "member_scores": {k: v.tolist() for k, v in self.member_scores.items()},
                "heldout_scores": {k: v.tolist() for k, v in self.heldout_scores.items()}, "trace": self.trace}
        (out / "result.json").write_text(json.dumps(meta, indent=1, default=_jsonable) + "\n")
        if report:
            from .report import plot_trace, save_before_after

            if self.samples.ndim == 4:
                save_before_after(self, out / "grid.png")
            plot_trace(self, out / "trace.png")
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


class Summary(str):
    """The CLI's summary text (what `print(result.summary())` shows). Indexing it with a key, as the dict that
    `summary()` returned before, still works for one release with a FutureWarning: use `summary_dict()`."""

    def __new__(cls, text: str, data: dict):
        obj = super().__new__(cls, text)
        obj.data = data
        return obj

    def __getitem__(self, key):
        if isinstance(key, str):
            warnings.warn("result.summary() now returns the summary text; read the numbers from "
                          f"result.summary_dict()[{key!r}]", FutureWarning, stacklevel=2)
            return self.data[key]
        return super().__getitem__(key)


def _mean(t: torch.Tensor) -> float:
    return float(t.float().mean()) if t.numel() else float("nan")


def _jsonable(obj: Any):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)
