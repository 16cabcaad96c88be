"""StackedNets and member grouping (stacked.py): every layout the wide network handles equals the loop over
members, every layout it refuses falls back before the first call, chunking policy, and grouping rules."""

import pytest
import torch
from torch import nn

from rewardsteer.errors import RewardsteerError
from rewardsteer.rewards.stacked import StackedNets, scores_with_stacks, stack_members


def loop(nets, x):
    return torch.stack([n(x) for n in nets])


def built(make, k=3, seed=0):
    torch.manual_seed(seed)
    return [make().eval().requires_grad_(False) for _ in range(k)]


def conv_bn_head():
    """Fully convolutional: the output is a stacked feature map, its last Conv → BatchNorm pair folded."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Conv2d(4, 2, 3, stride=2), nn.BatchNorm2d(2))
    net[3].running_mean.normal_(0, 0.5)
    net[3].running_var.uniform_(0.5, 2.0)
    return net


def mlp_flatten_twice():
    """Flatten → Linear (no bias) → Flatten (a no-op on (k, B, F)) → Linear."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 6, bias=False), nn.Tanh(), nn.Flatten(), nn.Linear(6, 2))


class ReluAndSkip(nn.Module):
    """relu(h) + h: the ReLU's input is read again afterwards, so it must not be overwritten in place."""

    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 2, 3), nn.ReLU()

    def forward(self, x):
        h = self.conv(x)
        return self.act(h) + h


@pytest.mark.parametrize("make", [conv_bn_head, mlp_flatten_twice, ReluAndSkip,
                                  lambda: nn.Sequential(nn.ReLU(), nn.Conv2d(3, 2, 3), nn.ReLU())],
                         ids=["conv_bn_head", "mlp_flatten_twice", "relu_and_skip", "relu_on_input"])
@pytest.mark.parametrize("grad", [False, True])
def test_wide_network_equals_the_loop(make, grad):
    nets = built(make)
    stack = StackedNets(nets)
    assert stack.wide is not None
    x = torch.randn(5, 3, 8, 8)  # negative values: an in-place ReLU on the caller's input would show
    x0 = x.clone()
    with torch.set_grad_enabled(grad):
        out = stack(x)
    torch.testing.assert_close(out, loop(nets, x), atol=1e-5, rtol=1e-5)
    assert torch.equal(x, x0) and stack.wide is not None
    if make is conv_bn_head:  # the user's nets keep their BatchNorm: folding works on a copy
        assert all(isinstance(n[3], nn.BatchNorm2d) and not isinstance(n[3], nn.Identity) for n in nets)


def test_a_weightless_net_gives_every_member_the_same_output():
    nets = built(lambda: nn.Sequential(nn.Flatten()), k=4)
    stack = StackedNets(nets)
    x = torch.randn(2, 3, 4, 4)
    out = stack(x)
    assert out.shape == (4, 2, 48)
    torch.testing.assert_close(out, loop(nets, x))


class WithDefault(nn.Module):
    def __init__(self):
        super().__init__()
        self.flat, self.lin = nn.Flatten(), nn.Linear(12, 2)

    def forward(self, x, scale=2.0):  # every layer known: only the input with a default is refused
        return self.lin(self.flat(x)) * scale


class CallsFlatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.lin = nn.Conv2d(3, 2, 1), nn.Linear(2 * 2 * 2, 2)

    def forward(self, x):
        return self.lin(torch.flatten(self.conv(x), 1))  # a call_function the wide network does not handle


@pytest.mark.parametrize("make", [
    WithDefault, CallsFlatten,
    lambda: nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(2)),  # Flatten other than (1, -1)
    lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.LayerNorm(4)),  # a layer it does not know
], ids=["input_with_default", "call_function", "flatten_2", "layernorm"])
def test_graphs_the_wide_network_cannot_follow_use_vmap_from_the_start(make):
    nets = built(make)
    stack = StackedNets(nets)
    assert stack.wide is None
    x = torch.randn(3, 3, 2, 2)
    torch.testing.assert_close(stack(x), loop(nets, x), atol=1e-5, rtol=1e-5)


def test_vmap_path_keeps_members_intact_and_builds_no_graph_for_frozen_weights():
    make = lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))  # noqa: E731
    nets = built(make)
    for n in nets:
        n[2].running_mean.normal_(0, 0.5)
    stack = StackedNets(nets, wide=False)
    assert stack.wide is None
    x = torch.randn(3, 3, 2, 2)
    ref = loop(nets, x)
    out = stack(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert not out.requires_grad  # stacked weights are frozen: no graph without a sample that needs one
    for n in (*nets, *stack.nets):  # the meta-device shell is a copy, not the member itself
        assert all(p.device.type == "cpu" for p in n.parameters())
    torch.testing.assert_close(loop(nets, x), ref)


def test_training_mode_nets_are_not_widened():
    nets = [n.train() for n in built(mlp_flatten_twice)]
    assert StackedNets(nets).wide is None


def count_calls(stack):
    sizes, wide = [], stack.wide

    def counted(x):
        sizes.append(x.shape[0])
        return wide(x)
    stack.wide = counted
    return sizes


@pytest.mark.parametrize("chunk, grad, batch, calls", [
    (None, False, 9, [4, 4, 1]), (None, True, 9, [8, 1]), (None, False, 4, [4]), (None, True, 8, [8]),
    (3, False, 7, [3, 3, 1]), (3, True, 3, [3]),
])
def test_batches_run_in_chunks_of_the_documented_size_on_cpu(chunk, grad, batch, calls):
    nets = built(mlp_flatten_twice)
    stack = StackedNets(nets, chunk=chunk)
    sizes = count_calls(stack)
    x = torch.randn(batch, 3, 8, 8)
    with torch.set_grad_enabled(grad):
        out = stack(x)
    assert sizes == calls
    torch.testing.assert_close(out, loop(nets, x), atol=1e-5, rtol=1e-5)


class Skip(nn.Module):
    def __init__(self, skip: bool):
        super().__init__()
        self.skip, self.conv, self.flat = skip, nn.Conv2d(3, 3, 3, padding=1), nn.Flatten()

    def forward(self, x):
        h = self.conv(x)
        return self.flat(h + self.conv(h) if self.skip else self.conv(h))


class Doubled(nn.Sequential):
    """A Sequential's attributes and tensors, another forward."""

    def forward(self, x):
        return 2 * super().forward(x)


class Scaled(nn.Module):
    """A tensor whose size no attribute records, and a non-JSON attribute (a function)."""

    def __init__(self, n):
        super().__init__()
        self.flat, self.scale, self.act = nn.Flatten(), nn.Parameter(torch.randn(n)), torch.tanh

    def forward(self, x):
        return self.act(self.flat(x)[:, : self.scale.shape[0]] * self.scale)


class Member:
    """A reward wrapping a network: what stack_members groups."""

    def __init__(self, net, bias=0.0):
        self.net, self.bias, self.seen_cond = net, bias, []

    def from_output(self, out, samples, cond=None):
        self.seen_cond.append(cond)
        return out.sum(1) + self.bias

    def check_input(self, samples):
        if samples.shape[1] != 3:
            raise RewardsteerError(f"expected 3 channels, got {samples.shape[1]}")

    def __call__(self, samples, cond=None):
        return self.from_output(self.net(samples), samples, cond)


def test_grouping_follows_architecture_settings_and_group_size():
    torch.manual_seed(0)
    plain = [Skip(False).eval() for _ in range(3)]
    skipping = [Skip(True).eval() for _ in range(2)]  # same tensors, another forward: another group
    single = nn.Sequential(nn.Flatten(), nn.Linear(27, 1)).eval()
    members = {"p0": Member(plain[0]), "s0": Member(skipping[0]), "p1": Member(plain[1]), "lone": Member(single),
               "s1": Member(skipping[1]), "p2": Member(plain[2])}
    members["no_from_output"] = type("Bare", (), {"net": plain[0], "__call__": lambda self, s, c=None: s.sum((1, 2, 3))})()
    seq = lambda: nn.Sequential(nn.Flatten(), nn.Linear(27, 2)).eval()  # noqa: E731
    members.update(q0=Member(seq()), d0=Member(Doubled(*seq()).eval()), q1=Member(seq()), d1=Member(Doubled(*seq()).eval()),
                   n4=Member(Scaled(4)), n5=Member(Scaled(5)))
    stacks = stack_members(members)
    assert sorted(names for names, _ in stacks) == [["d0", "d1"], ["p0", "p1", "p2"], ["q0", "q1"], ["s0", "s1"]]
    assert [names for names, stack in stacks if stack.wide is None] == []
    assert all(stack.wide is None for _, stack in stack_members(members, wide=False))
    x = torch.randn(4, 3, 3, 3)
    with torch.no_grad():
        got = scores_with_stacks(members, stacks, x, cond=7)
        ref = {name: r(x, 7) for name, r in members.items()}
    assert list(got) == list(members)  # member order
    for name in members:
        torch.testing.assert_close(got[name], ref[name], atol=1e-5, rtol=1e-5)
    assert members["lone"].seen_cond == [7, 7]  # the unstacked member gets the condition too


def test_stacked_members_run_once_per_stack_and_check_each_input():
    nets = built(lambda: nn.Sequential(nn.Flatten(), nn.Linear(27, 2)))
    members = {f"m{i}": Member(n, bias=i) for i, n in enumerate(nets)}
    stacks = stack_members(members)
    calls = []
    for n in nets:
        n.register_forward_hook(lambda *a: calls.append(1))
    scores_with_stacks(members, stacks, torch.randn(2, 3, 3, 3), None)
    assert calls == []  # the members' own networks are not called: the stack is

    members["m2"].check_input = lambda s: (_ for _ in ()).throw(RewardsteerError("m2 refuses"))
    with pytest.raises(RewardsteerError, match="m2 refuses"):
        scores_with_stacks(members, stacks, torch.randn(2, 3, 3, 3), None)
    with pytest.raises(RewardsteerError, match="expected 3 channels, got 1"):
        scores_with_stacks(members, stacks, torch.randn(2, 1, 3, 3), None)


def test_samples_are_cast_to_the_stack_dtype():
    nets = [n.double() for n in built(lambda: nn.Sequential(nn.Flatten(), nn.Linear(27, 2)))]
    members = {f"m{i}": Member(n) for i, n in enumerate(nets)}
    stacks = stack_members(members)
    x = torch.randn(2, 3, 3, 3)
    got = scores_with_stacks(members, stacks, x, None)
    assert got["m0"].dtype == torch.float64
    torch.testing.assert_close(got["m1"], nets[1](x.double()).sum(1))
