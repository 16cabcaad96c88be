"""Short reward specs for the command line (`rewardsteer run --pipeline ... --reward clip:openai/clip-vit-large-patch14`).

    clip:PATH_OR_ID            100·cos(image, prompt) under that CLIP model
    pickscore:PATH_OR_ID       PickScore: logit_scale·cos(image, prompt) (e.g. yuvalkirstain/PickScore_v1)
    hps:PATH_OR_ID             HPS v2-style: cos(image, prompt) under an HPS CLIP converted to transformers
    head:FILE.safetensors[@C]  a head on CLIP image features (aesthetic MLP); C = a CLIP model, else the last one named
    suppress:CONCEPT[@C]       −CLIP similarity to CONCEPT (steer away from it), same rule for C
    jpeg[:QUALITY]             JPEG compressibility (not differentiable: best_of_n or search)
"""

from __future__ import annotations

from ..core import Reward
from ..errors import RewardsteerError, UnknownNameError
from ..rewards.base import Ensemble
from .rewards import CLIPFeatures, CLIPHead, CLIPScore, JPEGCompressibility, MLPHead, hps_score, pickscore, suppress_concept

KINDS = ("clip:PATH_OR_ID", "pickscore:PATH_OR_ID", "hps:PATH_OR_ID", "head:FILE.safetensors[@CLIP]",
         "suppress:CONCEPT[@CLIP]", "jpeg[:QUALITY]")
SCORES = {"clip": CLIPScore, "pickscore": pickscore, "hps": hps_score}  # prompt-image scores on one CLIP model


class SpecParser:
    """Parses specs in order, loading each CLIP model once and sharing it between the rewards that name it."""

    def __init__(self, prompt: str | None, dtype=None, device=None, checkpoint: bool = False):
        self.prompt, self.dtype, self.device, self.checkpoint = prompt, dtype, device, checkpoint
        self.clips: dict[str, CLIPFeatures] = {}
        self.last: str | None = None

    def clip(self, name: str | None, spec: str) -> CLIPFeatures:
        """The CLIP model `name` (loaded once), or the last one named when `name` is None."""
        name = name or self.last
        if name is None:
            raise RewardsteerError(f"'{spec}' needs a CLIP model: write it as '{spec}@PATH_OR_ID' or put a "
                                   "clip:PATH_OR_ID reward before it")
        if name not in self.clips:
            self.clips[name] = CLIPFeatures.load(name, self.dtype, self.device, checkpoint=self.checkpoint)
        self.last = name
        return self.clips[name]

    def reward(self, spec: str) -> Reward:
        """One reward from one spec (grammar in the module docstring)."""
        head, _, tail = spec.partition(":")
        if head in SCORES and tail:
            if not self.prompt:
                raise RewardsteerError(f"a {head}: reward scores the image against --prompt; pass --prompt")
            return SCORES[head](self.clip(tail, spec), prompt=self.prompt, name=spec)
        if head == "jpeg":
            if tail and not tail.isdigit():
                raise RewardsteerError(f"jpeg quality must be an integer 1..100, got '{tail}'")
            return JPEGCompressibility(int(tail) if tail else 95, name=spec)
        if head in ("head", "suppress") and tail:
            what, _, clip_name = tail.rpartition("@") if "@" in tail else (tail, "", "")
            features = self.clip(clip_name or None, spec)
            if head == "head":
                return CLIPHead(features, MLPHead.from_safetensors(what), name=spec)
            return suppress_concept(features, what, name=spec)
        raise UnknownNameError("reward", spec, KINDS)

    def rewards(self, specs) -> Reward:
        """One reward, or the mean of several with their names kept (as the bundled-model CLI does)."""
        members = [self.reward(s) for s in specs]
        return members[0] if len(members) == 1 else Ensemble(members, name="+".join(specs))
