"""Ensemble members of one architecture evaluated in one vectorized call.

k eval-mode networks with identical parameter shapes run as one wide network: the traced graph (torch.fx) of
the first is replayed with every layer's weights concatenated across members. The shared input meets one
convolution with k·C_out channels (computed as an im2col GEMM, which writes channels-last directly), later
convolutions are grouped (groups = k) on channels-last activations, pooling and activations act on all k·C
channels at once, and linear layers are batched matmuls over the member dim. The batch is processed in
chunks (4 samples forward-only, 8 when a graph is recorded: the best of 2/4/8 measured on CPU) so the
k-times-wider activations stay in cache. Eval-mode BatchNorm is folded into the preceding convolution first.

Networks with a layer this does not know, a layout it cannot follow (found on the first call), or in
training mode fall back to torch.func: stack_module_state + vmap over functional_call. Measured speedups
over a Python loop: docs/benchmarks/ensemble_speed.md.
Gradients flow to the samples as in the loop (ReNO backpropagates through the ensemble).
"""

from __future__ import annotations

import copy
import json
import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..core import input_for

CHANNELS_LAST = torch.channels_last
# Layers that act on each channel (or each feature) independently, so k members' channels side by side are
# just more channels.
CHANNELWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.Identity, nn.Dropout,
               nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
ARITHMETIC = {operator.add, operator.sub, operator.mul, operator.truediv, operator.neg}


class StackedNets:
    """k same-architecture modules as one: `forward(x) -> (k, B, ...)`, each module's output on the same x.
    `chunk`: samples per call (default on CPU: 4 without gradients, 8 with; elsewhere the whole batch).
    `wide=False` forces the torch.func (vmap) route, which the benchmark compares against."""

    def __init__(self, nets: list[torch.nn.Module], chunk: int | None = None, wide: bool = True):
        if len({_signature(n) for n in nets}) != 1:
            raise ValueError("StackedNets needs modules of one architecture and training mode")
        self.nets, self.chunk = [fold_batchnorm(n) for n in nets], chunk
        self.wide = _wide_network(self.nets) if wide and not self.nets[0].training else None
        self.call = self.wide or _vmapped(self.nets)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.wide is None:
            return self.call(x)
        try:
            return self._wide_in_chunks(x)
        except _Unsupported:  # a layout the wide network cannot follow: vmap from now on
            self.wide, self.call = None, _vmapped(self.nets)
            return self.call(x)

    def _wide_in_chunks(self, x: torch.Tensor) -> torch.Tensor:
        chunk = self.chunk or (8 if torch.is_grad_enabled() else 4)
        if x.shape[0] <= chunk or (self.chunk is None and x.device.type != "cpu"):
            # chunks keep the wide activations in a CPU's cache; a GPU wants the whole batch in one call
            return self.wide(x)
        return torch.cat([self.wide(part) for part in x.split(chunk)], dim=1)


class _Value:
    """A traced value and how the k members' copies of it are laid out (the subclass)."""

    def __init__(self, tensor):
        self.t = tensor


class _Shared(_Value):
    """A value every member sees identically (the input and what is computed from it before any weight)."""


class _Channels(_Value):
    """k members' (B, C, H, W) activations side by side as one (B, k·C, H, W) tensor."""


class _Leading(_Value):
    """k members' (B, F) activations as one (k, B, F) tensor."""


class _Unsupported(Exception):
    """A layer or a layout the wide network does not handle: StackedNets falls back to vmap."""


def _wide_network(nets: list[nn.Module]) -> Callable | None:
    """The k nets as one function of x, or None when the traced graph has a layer not handled here."""
    try:
        graph = fx.symbolic_trace(nets[0]).graph
    except Exception:  # noqa: BLE001 - data-dependent control flow and the like: not traceable, use vmap
        return None
    try:
        steps = [_step(node, nets) for node in graph.nodes]
    except _Unsupported:
        return None
    k = len(nets)

    def run(x: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = {}
        for step in steps:
            out = step(env, x)
            if step.name == "output":
                return _to_members(out, k, x.shape[0])
            env[step.name] = out
        raise RuntimeError("traced graph has no output")

    return run


def _step(node: fx.Node, nets: list[nn.Module]):
    """One graph node as a function of (env, x), with the k members' weights for it concatenated."""
    k = len(nets)

    def arg(env, a):
        return env[a.name] if isinstance(a, fx.Node) else a

    if node.op == "placeholder":
        if node.args or node.kwargs:
            raise _Unsupported("inputs with defaults")
        fn = lambda env, x: _Shared(x)  # noqa: E731
    elif node.op == "output":
        fn = lambda env, x: arg(env, node.args[0])  # noqa: E731
    elif node.op == "call_module":
        mods = [n.get_submodule(node.target) for n in nets]
        src = node.args[0]  # a value used by this layer alone may be overwritten in place
        layer = _layer(mods, k, sole_user=isinstance(src, fx.Node) and len(src.users) == 1)
        fn = lambda env, x: layer(arg(env, node.args[0]))  # noqa: E731
    elif node.op == "call_function" and node.target in ARITHMETIC and not node.kwargs:
        fn = lambda env, x: _arithmetic(node.target, [arg(env, a) for a in node.args])  # noqa: E731
    else:
        raise _Unsupported(f"{node.op} {node.target}")
    fn.name = node.name
    return fn


def _layer(mods: list[nn.Module], k: int, sole_user: bool) -> Callable:
    """Module `mods[0]` (and its k − 1 twins) applied to a _Shared / _Channels / _Leading value. `sole_user`: no
    other node reads this layer's input, so an activation may overwrite it when no graph is recorded."""
    m = mods[0]
    if isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros" and isinstance(m.padding, tuple):
        return _conv(mods, k)
    if isinstance(m, nn.Linear):
        return _linear(mods, k)
    if isinstance(m, nn.ReLU) and sole_user:  # in place when no graph is recorded: one less wide tensor in cache
        return lambda v: type(v)(torch.relu(v.t) if torch.is_grad_enabled() or isinstance(v, _Shared) else v.t.relu_())
    if isinstance(m, CHANNELWISE):
        return lambda v: type(v)(m(v.t))
    if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
        def flatten(v):
            if isinstance(v, _Channels):  # (B, k·C, H, W) → (k, B, C·H·W): each member's block is contiguous in C
                return _Leading(v.t.reshape(v.t.shape[0], k, -1).transpose(0, 1))
            return type(v)(v.t.flatten(1) if isinstance(v, _Shared) else v.t.flatten(2))
        return flatten
    raise _Unsupported(type(m).__name__)


def _conv(mods: list[nn.Conv2d], k: int) -> Callable:
    m = mods[0]
    weight = torch.cat([c.weight.detach() for c in mods]).contiguous(memory_format=CHANNELS_LAST)
    bias = torch.cat([c.bias.detach() if c.bias is not None else c.weight.new_zeros(c.out_channels) for c in mods])
    gemm_weight = weight.flatten(1).t().contiguous()  # (C·kh·kw, k·C_out) for the shared-input GEMM

    def conv(v):
        if isinstance(v, _Channels):
            return _Channels(F.conv2d(v.t, weight, bias, m.stride, m.padding, m.dilation, groups=k))
        if not isinstance(v, _Shared) or v.t.dim() != 4:
            raise _Unsupported("convolution of a flattened value")
        # The shared input: one im2col GEMM for all k·C_out channels; its (B·H·W, k·C_out) result already is
        # the channels-last layout the grouped convolutions after it want.
        x = v.t
        b, h, w = x.shape[0], *_conv_out_size(m, x.shape[-2:])
        cols = F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)  # (B, C·kh·kw, H·W)
        out = torch.addmm(bias, cols.transpose(1, 2).reshape(b * h * w, -1), gemm_weight)
        return _Channels(out.view(b, h, w, -1).permute(0, 3, 1, 2))

    return conv


def _conv_out_size(m: nn.Conv2d, size) -> tuple[int, int]:
    return tuple((s + 2 * p - d * (kk - 1) - 1) // st + 1
                 for s, p, d, kk, st in zip(size, m.padding, m.dilation, m.kernel_size, m.stride))


def _linear(mods: list[nn.Linear], k: int) -> Callable:
    weight = torch.stack([m.weight.detach().t() for m in mods])  # (k, F_in, F_out)
    bias = torch.stack([m.bias.detach() if m.bias is not None else m.weight.new_zeros(m.out_features) for m in mods])

    def linear(v):
        if isinstance(v, _Shared):  # (B, F_in) → (k, B, F_out) through one (F_in, k·F_out) matmul
            out = v.t @ weight.transpose(0, 1).reshape(weight.shape[1], -1) + bias.flatten()
            return _Leading(out.view(v.t.shape[0], k, -1).transpose(0, 1))
        if isinstance(v, _Leading) and v.t.dim() == 3:
            return _Leading(torch.baddbmm(bias[:, None], v.t, weight))
        raise _Unsupported("linear layer on an unflattened stacked value")

    return linear


def _arithmetic(op, args: list) -> Any:
    """Elementwise arithmetic among values of one layout and Python numbers (e.g. input normalization, or a
    residual sum of two stacked activations); mixing layouts, e.g. stacked + shared, is _Unsupported."""
    kinds = {type(a) for a in args if isinstance(a, _Value)}
    if len(kinds) != 1 or any(isinstance(a, torch.Tensor) for a in args):
        raise _Unsupported("arithmetic across layouts")
    return kinds.pop()(op(*[a.t if isinstance(a, _Value) else a for a in args]))


def _to_members(v, k: int, batch: int) -> torch.Tensor:
    """The network output as (k, B, ...)."""
    if isinstance(v, _Leading):
        return v.t
    if isinstance(v, _Channels):
        t = v.t
        return t.reshape(batch, k, t.shape[1] // k, *t.shape[2:]).transpose(0, 1)
    if isinstance(v, _Shared):
        return v.t.expand(k, *v.t.shape)
    raise _Unsupported(f"network output of type {type(v).__name__}")


def _vmapped(nets: list[nn.Module]) -> Callable:
    """The general fallback: torch.func stacked parameters and vmap over one functional call."""
    params, buffers = stack_module_state(nets)
    for p in params.values():
        p.requires_grad_(False)  # frozen rewards: gradients go to the samples only
    base = copy.deepcopy(nets[0]).to("meta")  # a shell; its weights come from the stacks

    def one(p, b, x):
        return functional_call(base, (p, b), (x,))

    call = vmap(one, in_dims=(0, 0, None))
    return lambda x: call(params, buffers, x)


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
    """What must match for two nets to share a stack (one traced graph, one functional shell): every submodule's
    class and plain attributes (training mode, strides, a config, flags its forward branches on) and every
    tensor's name, shape, dtype and device."""
    modules = tuple((name, type(m), json.dumps({a: v for a, v in vars(m).items() if not a.startswith("_")},
                                               sort_keys=True, default=str))
                    for name, m in net.named_modules())
    tensors = tuple((k, tuple(v.shape), v.dtype, str(v.device)) for k, v in net.state_dict().items())
    return modules, tensors


def stack_members(members: Mapping[str, Any], wide: bool = True) -> list[tuple[list[str], StackedNets]]:
    """Groups of ≥ 2 members that wrap a network (`.net`, `.from_output`) of the same signature, stacked."""
    groups: dict[tuple, list[str]] = {}
    for name, r in members.items():
        if isinstance(getattr(r, "net", None), torch.nn.Module) and hasattr(r, "from_output"):
            groups.setdefault(_signature(r.net), []).append(name)
    return [(names, StackedNets([members[n].net for n in names], wide=wide))
            for names in groups.values() if len(names) > 1]


def scores_with_stacks(members: Mapping[str, Any], stacks, samples: torch.Tensor, cond: Any) -> dict:
    """Every member's (B,) score, stacked groups in one call each and the rest one by one, in member order."""
    out = {}
    for names, stack in stacks:
        for name in names:  # a clear error before a torch shape error
            if hasattr(members[name], "check_input"):
                members[name].check_input(samples)
        outputs = stack(input_for(stack.nets[0], samples))  # (k, B, ...) one output per member
        for i, name in enumerate(names):
            out[name] = members[name].from_output(outputs[i], samples, cond)
    return {name: out[name] if name in out else r(samples, cond) for name, r in members.items()}
