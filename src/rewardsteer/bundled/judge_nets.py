"""Held-out evaluators independent of the proxies: other model families, trained on other images.

The proxies `mnist-proxy-*` are CNNs and pixel MLPs fit to a noisy 10k subset of MNIST train; these models
see only the other 50k train images (`train.judges`), so a sample that fools the proxies by exploiting
their blind spots has no reason to fool these as well.

- `ViTClassifier` (`mnist-judge-vit`): a small Vision Transformer (Dosovitskiy et al. 2021, "An image is
  worth 16x16 words"): 4x4 patches, a CLS token, learned positions, pre-norm blocks.
- `RFFClassifier` (`mnist-judge-rff`): a kernel machine, PCA then random Fourier features of a Gaussian
  kernel (Rahimi & Recht 2007, "Random features for large-scale kernel machines") and a softmax layer.
- `RealismIndex` (`mnist-realism`): no classifier at all, the mean distance to the k nearest real digits in
  a PCA space, wrapped by `RealismMonitor` as a held-out realism reward.

Every one takes [0, 1] images (B, 1, 28, 28); its fixed statistics (PCA, frequencies, references) are
buffers, so it loads from safetensors and runs (differentiably) in plain torch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .nets import TransformerBlock

MNIST_SHAPE = (1, 28, 28)


class ViTClassifier(nn.Module):
    """A small ViT (Dosovitskiy et al. 2021) for 28x28 digits; `features` is the final CLS embedding."""

    input_shape = MNIST_SHAPE

    def __init__(self, patch: int = 4, dim: int = 64, depth: int = 4, heads: int = 4, mlp: int = 128,
                 num_classes: int = 10):
        super().__init__()
        if 28 % patch or dim % heads:
            raise ValueError(f"patch must divide 28 and heads must divide dim; got patch={patch}, {dim=}, {heads=}")
        self.config = {"patch": patch, "dim": dim, "depth": depth, "heads": heads, "mlp": mlp,
                       "num_classes": num_classes}
        tokens = (28 // patch) ** 2
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)  # one linear map per non-overlapping patch
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads, mlp) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed((images - 0.1307) / 0.3081).flatten(2).transpose(1, 2)  # (B, 49, dim) patch tokens
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos  # (B, 50, dim)
        return self.norm(self.blocks(x))[:, 0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class RFFClassifier(nn.Module):
    """Softmax regression on random Fourier features of PCA coordinates (Rahimi & Recht 2007).

    φ(x) = √(2/D) · cos(W·P(x) + b), W ~ N(0, σ⁻² I), b ~ U[0, 2π), approximates the Gaussian kernel
    exp(−‖P(x) − P(x')‖² / 2σ²) on the PCA projection P(x) = (x − μ)·V. μ, V, W, b are buffers set by
    `fit_pca` / `draw_features`; only the linear head is learned.
    """

    input_shape = MNIST_SHAPE

    def __init__(self, components: int = 50, num_features: int = 4096, num_classes: int = 10):
        super().__init__()
        self.config = {"components": components, "num_features": num_features, "num_classes": num_classes}
        self.register_buffer("mean", torch.zeros(784))
        self.register_buffer("basis", torch.zeros(784, components))  # (784, C) principal directions
        self.register_buffer("freqs", torch.zeros(components, num_features))  # W / σ
        self.register_buffer("phases", torch.zeros(num_features))
        self.head = nn.Linear(num_features, num_classes)

    def project(self, images: torch.Tensor) -> torch.Tensor:
        return (images.flatten(1) - self.mean) @ self.basis  # (B, C)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        d = self.freqs.shape[1]
        return math.sqrt(2 / d) * torch.cos(self.project(images) @ self.freqs + self.phases)  # (B, D)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    @torch.no_grad()
    def fit_pca(self, images: torch.Tensor) -> None:
        self.mean.copy_(images.flatten(1).mean(0))
        self.basis.copy_(pca_basis(images, self.basis.shape[1]))

    @torch.no_grad()
    def draw_features(self, bandwidth: float, generator: torch.Generator) -> None:
        self.freqs.copy_(torch.randn(self.freqs.shape, generator=generator) / bandwidth)
        self.phases.copy_(torch.rand(self.phases.shape, generator=generator) * 2 * math.pi)


class RealismIndex(nn.Module):
    """Mean Euclidean distance from each image to its k nearest reference digits in a PCA space, divided by
    the median of that quantity over real held-out digits (so a typical real digit gives about 1)."""

    input_shape = MNIST_SHAPE

    def __init__(self, components: int = 50, reference_size: int = 20_000, k: int = 5):
        super().__init__()
        self.config = {"components": components, "reference_size": reference_size, "k": k}
        self.k = k
        self.register_buffer("mean", torch.zeros(784))
        self.register_buffer("basis", torch.zeros(784, components))
        self.register_buffer("reference", torch.zeros(reference_size, components))  # PCA coordinates
        self.register_buffer("scale", torch.ones(()))

    def project(self, images: torch.Tensor) -> torch.Tensor:
        return (images.flatten(1).float() - self.mean) @ self.basis

    def forward(self, images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """(B,) normalized k-NN distances: about 1 for real digits, larger for unrealistic images."""
        p = self.project(images)
        dist = [torch.cdist(part, self.reference).topk(self.k, dim=1, largest=False).values.mean(1)
                for part in p.split(chunk)]
        return torch.cat(dist) / self.scale

    @torch.no_grad()
    def fit(self, images: torch.Tensor, reference: torch.Tensor, validation: torch.Tensor) -> None:
        """PCA on `images`, store `reference`'s coordinates, normalize by the median over `validation`."""
        self.mean.copy_(images.flatten(1).mean(0))
        self.basis.copy_(pca_basis(images, self.basis.shape[1]))
        self.reference.copy_(self.project(reference))
        self.scale.copy_(self(validation).median())


def pca_basis(images: torch.Tensor, components: int) -> torch.Tensor:
    """The top `components` principal directions (784, C) of flattened images, in float64 for stability."""
    x = images.flatten(1).double()
    x = x - x.mean(0)
    _, vecs = torch.linalg.eigh(x.T @ x)  # ascending eigenvalues
    return vecs[:, -components:].flip(1).float()
