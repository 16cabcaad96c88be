"""The flow sampler's algebra and the unrolled generator's gradients (tiny random UNet)."""

import pytest
import torch

from rewardsteer.bundled.flow import NULL_CLASS, FlowSampler, UnrolledSampler, class_labels
from tests.conftest import tiny_unet


def test_eta_zero_is_euler_on_the_velocity():
    s = FlowSampler(tiny_unet(), num_steps=5, guidance=1.5, eta=0.0)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    euler = x.clone()
    for i in range(5):
        t = s.time(i)
        euler = euler + (s.time(i + 1) - t) * s.velocity(euler, t, 2)
        x = s.step(x, i, 2, None).x_next
    assert torch.allclose(x, euler, atol=1e-5)


def test_stochastic_transition_is_the_ddpm_posterior():
    s = FlowSampler(tiny_unet(), num_steps=4, eta=1.0)
    x = torch.randn(2, 1, 28, 28)
    x0 = torch.randn(2, 1, 28, 28)
    for i in range(4):
        t, u = s.time(i), s.time(i + 1)
        mean, std = s.transition(x, i, x0)
        # q(x_s | x_t, x0) for x_t = t x0 + (1-t) eps: variance sigma_{t|s}^2 sigma_s^2 / sigma_t^2
        a_ts = t / u
        var_ts = (1 - t) ** 2 - a_ts**2 * (1 - u) ** 2
        assert torch.allclose(std**2, torch.tensor(var_ts * (1 - u) ** 2 / (1 - t) ** 2), atol=1e-6)
        # its mean: a_s x0 + coefficient on x_t as in Ho et al. (2020) eq. 7, in (alpha, sigma) form
        coef_x = a_ts * (1 - u) ** 2 / (1 - t) ** 2
        coef_x0 = u * var_ts / (1 - t) ** 2
        assert torch.allclose(mean, coef_x * x + coef_x0 * x0, atol=1e-5)
    assert float(s.transition(x, 3, x0)[1]) == 0.0  # the last step lands on the x0-prediction


def test_explicit_step_noise_makes_particles_reproducible():
    s = FlowSampler(tiny_unet(), num_steps=3, eta=1.0)
    x = torch.randn(2, 1, 28, 28)
    noise = torch.randn(2, 1, 28, 28)
    a, b = s.step(x, 0, 1, noise), s.step(x, 0, 1, noise)
    assert torch.equal(a.x_next, b.x_next)
    assert torch.allclose(a.x_next, a.mean + a.std * noise)


def test_checkpointed_and_plain_backprop_agree():
    sampler = FlowSampler(tiny_unet(), num_steps=4, eta=0.0)
    z = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    grads = []
    for ckpt in (True, False):
        zz = z.clone().requires_grad_(True)
        UnrolledSampler(sampler, checkpoint=ckpt)(zz, 5).pow(2).sum().backward()
        grads.append(zz.grad)
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_condition_errors_are_clear():
    assert class_labels(None, 2, "cpu").tolist() == [NULL_CLASS, NULL_CLASS]  # unconditional
    with pytest.raises(ValueError, match="0..9"):
        class_labels(11, 2, "cpu")
    assert class_labels(3, 4, "cpu").tolist() == [3, 3, 3, 3]
