"""Shared fixtures: tiny random models (fast, no weights) and toy rewards with known optima."""

import os

import pytest
import torch

from rewardsteer.bundled.flow import FlowSampler, OneStepUNet, UnrolledSampler
from rewardsteer.bundled.nets import UNet
from rewardsteer.core import OneStepGenerator, Reward

if "OMP_NUM_THREADS" not in os.environ:  # an explicit thread count (e.g. the mutation runs' 1) is kept
    torch.set_num_threads(2)
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never touch the network (read by huggingface_hub at import)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (`pytestmark = pytest.mark.usefixtures("one_thread")`): small models run
    no slower, and a shared 2-core machine stays usable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_unet(seed=0):
    torch.manual_seed(seed)
    net = UNet((8, 16), emb_dim=32)
    for p in net.parameters():  # random but non-trivial outputs (the last conv starts at zero)
        p.data.normal_(0, 0.05)
    return net.eval().requires_grad_(False)


@pytest.fixture
def tiny_onestep():
    return OneStepUNet(tiny_unet())


@pytest.fixture
def tiny_unrolled():
    return UnrolledSampler(FlowSampler(tiny_unet(1), num_steps=3, guidance=2.0, eta=0.0), checkpoint=True)


class Brightness(Reward):
    """Mean pixel value: smooth, differentiable, and easy to raise."""

    name = "brightness"

    def score(self, samples, cond=None):
        return samples.flatten(1).mean(1)


@pytest.fixture
def brightness():
    return Brightness()


class Identity(OneStepGenerator):
    """G(z) = z on a flat d-dimensional noise: the regularizer's effect is visible with no network at all."""

    def __init__(self, d=784):
        super().__init__()
        self.noise_shape = (d,)
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, z, cond=None):
        return z + self.anchor


class Costly(Identity):
    """Identity with several NFE per call, so per-sample and per-call counts differ."""

    def __init__(self, d, npc):
        super().__init__(d)
        self.nfe_per_call = npc


@pytest.fixture
def identity():
    return Identity()


class Out:
    """A CLI call's exit code and output; unpacks as (returncode, stdout, stderr)."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def __iter__(self):
        return iter((self.returncode, self.stdout, self.stderr))


@pytest.fixture
def run_cli(capsys):
    """The CLI in-process (importing torch once), as a subprocess would see it: exit code, stdout, stderr."""
    def call(*args):
        code = 0
        try:
            from rewardsteer.cli import main

            main(list(args))
        except SystemExit as e:
            code = e.code
        captured = capsys.readouterr()
        return Out(code, captured.out, captured.err)
    return call


TOY = dict(weights=[0.7, 0.3], means=[-1.5, 1.5], stds=[0.5, 0.5])  # a 1-D two-Gaussian target for the toy flow


# ---- tiny Hugging Face models for the hf test modules (built from configs in tests/hf_tiny.py, imported lazily so
# that the rest of the suite never imports diffusers or transformers)

@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory):
    """A tiny SD-Turbo-style pipeline saved with save_pretrained."""
    from tests.hf_tiny import tiny_pipeline

    path = tmp_path_factory.mktemp("tiny-sd-turbo")
    tiny_pipeline().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny CLIPModel (16×16 images) and its tokenizer saved with save_pretrained."""
    from tests.hf_tiny import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def features(clip_dir):
    from rewardsteer.hf import CLIPFeatures

    return CLIPFeatures.load(clip_dir)


@pytest.fixture(scope="module")
def clip_reward(features):
    from rewardsteer.hf import CLIPScore
    from tests.hf_tiny import PROMPT

    return CLIPScore(features, prompt=PROMPT)
