"""Ensemble members of one architecture evaluated in one vectorized call.

k networks with identical parameter shapes are stacked along a new leading dim (torch.func.stack_module_state)
and run by vmap over a functional call, so k small convolutions become one batched call instead of k Python
round trips. Gradients flow to the samples as in the loop (ReNO backpropagates through the ensemble).

Measured on CPU (docs/benchmarks/ensemble_speed.md, 1 thread, k = 5 `mnist-proxy`-size CNNs): 1.2–1.5× over
the loop with gradients at batches ≤ 16, parity or worse forward-only and at batch 64, where the loop is
compute-bound and vmap's grouped convolutions cost more than the overhead they save. Eval-mode BatchNorm is
folded into the preceding convolution before stacking, since vmap's BatchNorm rule adds several ops.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.utils.fusion import fuse_conv_bn_eval


class StackedNets:
    """k same-architecture modules as one: `forward(x) -> (k, B, ...)`, each module's output on the same x."""

    def __init__(self, nets: list[torch.nn.Module]):
        if len({_signature(n) for n in nets}) != 1:
            raise ValueError("StackedNets needs modules of one architecture and training mode")
        nets = [fold_batchnorm(n) for n in nets]
        self.params, self.buffers = stack_module_state(nets)
        for p in self.params.values():
            p.requires_grad_(False)  # frozen rewards: gradients go to the samples only
        self.base = copy.deepcopy(nets[0]).to("meta")  # a shell; its weights come from the stacks

        def one(params, buffers, x):
            return functional_call(self.base, (params, buffers), (x,))

        self.call = vmap(one, in_dims=(0, 0, None))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.call(self.params, self.buffers, x)


def fold_batchnorm(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of an eval-mode net with each Conv2d → BatchNorm2d pair inside a Sequential fused into one conv."""
    if net.training:
        return net
    net = copy.deepcopy(net)
    for seq in net.modules():
        if isinstance(seq, torch.nn.Sequential):
            for i in range(len(seq) - 1):
                if isinstance(seq[i], torch.nn.Conv2d) and isinstance(seq[i + 1], torch.nn.BatchNorm2d):
                    seq[i], seq[i + 1] = fuse_conv_bn_eval(seq[i], seq[i + 1]), torch.nn.Identity()
    return net


def _signature(net: torch.nn.Module) -> tuple:
    """What must match for two nets to share a stack: class, config, training mode, tensor shapes/dtypes/devices."""
    config = json.dumps(getattr(net, "config", None), sort_keys=True, default=str)
    tensors = tuple((k, tuple(v.shape), v.dtype, str(v.device)) for k, v in net.state_dict().items())
    return type(net), config, net.training, tensors


def stack_members(members: Mapping[str, Any]) -> list[tuple[list[str], StackedNets]]:
    """Groups of ≥ 2 members that wrap a network (`.net`, `.from_output`) of the same signature, stacked."""
    groups: dict[tuple, list[str]] = {}
    for name, r in members.items():
        if isinstance(getattr(r, "net", None), torch.nn.Module) and hasattr(r, "from_output"):
            groups.setdefault(_signature(r.net), []).append(name)
    return [(names, StackedNets([members[n].net for n in names])) for names in groups.values() if len(names) > 1]


def scores_with_stacks(members: Mapping[str, Any], stacks, samples: torch.Tensor, cond: Any) -> dict:
    """Every member's (B,) score, stacked groups in one call each and the rest one by one, in member order."""
    out = {}
    for names, stack in stacks:
        outputs = stack(samples)  # (k, B, ...) one output per member
        for i, name in enumerate(names):
            out[name] = members[name].from_output(outputs[i], samples, cond)
    return {name: out[name] if name in out else r(samples, cond) for name, r in members.items()}
