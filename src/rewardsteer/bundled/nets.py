"""Small networks for the bundled MNIST models: a conditional UNet, a CNN and a pixel-MLP classifier.

Notation: images are (B, 1, 28, 28); the UNet works in [-1, 1], classifiers take [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (Vaswani et al. 2017), scaled to 1000 'steps'."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=1).to(t.dtype if t.is_floating_point() else torch.float32)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv residual block with a scale/shift from the conditioning embedding."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(8, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return h + self.skip(x)


class UNet(nn.Module):
    """Class-conditional UNet v(x, t, y) for 28x28 images; class index `num_classes` means 'no class'.

    Used both as the flow-matching velocity field and (with t fixed to 0) as the one-step generator.
    """

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128), num_classes: int = 10, emb_dim: int = 128):
        super().__init__()
        self.config = {"channels": list(channels), "num_classes": num_classes, "emb_dim": emb_dim}
        self.num_classes = num_classes
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim)
        self.stem = nn.Conv2d(1, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c_prev = channels[0]
        skips = []
        for i, c in enumerate(channels):
            self.down.append(nn.ModuleList([ResBlock(c_prev, c, emb_dim), ResBlock(c, c, emb_dim)]))
            skips.append(c)
            c_prev = c
            last = i == len(channels) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = nn.ModuleList([ResBlock(c_prev, c_prev, emb_dim), ResBlock(c_prev, c_prev, emb_dim)])
        self.up = nn.ModuleList()
        for c in reversed(channels):
            self.up.append(nn.ModuleList([ResBlock(c_prev + skips.pop(), c, emb_dim), ResBlock(c, c, emb_dim)]))
            c_prev = c
        self.out_norm = nn.GroupNorm(8, c_prev)
        self.out = nn.Conv2d(c_prev, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y: (B,) class indices, or (B, num_classes + 1) weights over them (a soft class: the embedding is
        the weighted mean of the class embeddings, differentiable in the weights)."""
        emb_dim = self.class_emb.embedding_dim
        cls = y.to(x.dtype) @ self.class_emb.weight if y.is_floating_point() else self.class_emb(y)
        emb = self.time_mlp(timestep_embedding(t, emb_dim).to(x.dtype)) + cls
        h = self.stem(x)
        hs = []
        for blocks, down in zip(self.down, self.downsample):
            for block in blocks:
                h = block(h, emb)
            hs.append(h)
            h = down(h)
        for block in self.mid:
            h = block(h, emb)
        for blocks in self.up:
            skip = hs.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = blocks[0](torch.cat([h, skip], dim=1), emb)
            h = blocks[1](h, emb)
        return self.out(F.silu(self.out_norm(h)))


class Classifier(nn.Module):
    """CNN digit classifier on [0, 1] images; `features` gives the penultimate activations."""

    input_shape = (1, 28, 28)

    def __init__(self, width: int = 32, feature_dim: int = 128, num_classes: int = 10, dropout: float = 0.3):
        super().__init__()
        self.config = {"width": width, "feature_dim": feature_dim, "num_classes": num_classes, "dropout": dropout}
        w = width

        def block(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())

        self.body = nn.Sequential(
            block(1, w), block(w, w), nn.MaxPool2d(2),  # 14x14
            block(w, 2 * w), block(2 * w, 2 * w), nn.MaxPool2d(2),  # 7x7
            block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * w, feature_dim), nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        # MNIST pixel statistics (mean 0.1307, sd 0.3081) standardize the input.
        return self.body((images - 0.1307) / 0.3081)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))


class MLPClassifier(nn.Module):
    """Pixel MLP digit classifier on [0, 1] images (no convolutions: another family than `Classifier`);
    `features` gives the last hidden layer."""

    input_shape = (1, 28, 28)

    def __init__(self, hidden: tuple[int, ...] = (256, 256), num_classes: int = 10, dropout: float = 0.3):
        super().__init__()
        self.config = {"hidden": list(hidden), "num_classes": num_classes, "dropout": dropout}
        layers, d = [nn.Flatten()], 784
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
            d = h
        self.body = nn.Sequential(*layers[:-1])  # the head's dropout comes after `features`
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body((images - 0.1307) / 0.3081)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))


class TransformerBlock(nn.Module):
    """Pre-norm Transformer block (Vaswani et al. 2017): x + MHA(LN(x)), then x + MLP(LN(x)); bidirectional."""

    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d / heads)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class AttributeRegressor(nn.Module):
    """(N, 1, 28, 28) in [0, 1] -> (N, len(names)) analytic attributes (`rewardsteer.bench.attributes`) in their own
    units, standardized inside by the training targets' `mean` / `std` (buffers). `mnist-attr-proxy`: a learned,
    differentiable and deliberately hackable stand-in for the analytic gold of the leaderboard's targets."""

    def __init__(self, width: int = 32, names: tuple = ("thickness", "slant", "height", "width", "ink")):
        super().__init__()
        self.config = {"width": width, "names": list(names)}
        self.names = tuple(names)
        self.body = nn.Sequential(
            nn.Conv2d(1, width // 2, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.ReLU(),  # (N, w, 14, 14)
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),  # (N, w, 7, 7)
            nn.Flatten(), nn.Linear(width * 49, 128), nn.ReLU(), nn.Linear(128, len(names)))
        self.register_buffer("mean", torch.zeros(len(names)))
        self.register_buffer("std", torch.ones(len(names)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * self.std + self.mean

    def attribute(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """(N,) one attribute, differentiable in x."""
        return self(x)[:, self.names.index(name)]

    def spread(self, name: str) -> torch.Tensor:
        """The attribute's standard deviation over the real training digits."""
        return self.std[self.names.index(name)]
