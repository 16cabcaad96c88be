"""Every training script runs end to end in its quick mode and writes loadable weights with a card."""

import json

import pytest
import torch

from rewardsteer.bundled import hub
from rewardsteer.train import classifiers, flow, onestep


def test_quick_training_writes_cards_and_safetensors(tmp_path):
    torch.set_num_threads(1)
    classifiers.main(["--quick", "--out", str(tmp_path), "--threads", "1"])
    flow.main(["--quick", "--out", str(tmp_path), "--threads", "1"])
    onestep.main(["--quick", "--out", str(tmp_path), "--threads", "1", "--teacher-dir", str(tmp_path)])
    for name in ("mnist-judge", "mnist-proxy-0", "mnist-flow", "mnist-onestep"):
        card = json.loads((tmp_path / f"{name}.json").read_text())
        assert card["name"] == name and card["training"]["seed"] is not None
        assert "python -m rewardsteer.train" in card["command"]
        assert hub.load_network(name, tmp_path) is not None
    assert (tmp_path / "logs" / "mnist-flow.jsonl").read_text().count("\n") >= 2


def test_training_is_deterministic(tmp_path):
    """Same seed, same data order, same thread count -> bit-identical weights (what makes cards reproducible)."""
    torch.set_num_threads(1)
    for run in ("a", "b"):
        flow.main(["--quick", "--out", str(tmp_path / run), "--threads", "1"])
    a = hub.load_safetensors(tmp_path / "a" / "mnist-flow.safetensors")
    b = hub.load_safetensors(tmp_path / "b" / "mnist-flow.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_killed_training_resumes_bit_identically(tmp_path, monkeypatch):
    """A run killed right after a checkpoint and restarted with --resume ends with the same weights as an
    uninterrupted run: model, EMA, optimizer moments, schedule, RNG and batch order all come back."""
    from rewardsteer.bundled.training import Checkpoint

    torch.set_num_threads(1)
    args = ["--steps", "5", "--batch", "4", "--threads", "1", "--label-dropout", "0.5", "--every", "0"]
    flow.main([*args, "--out", str(tmp_path / "whole")])
    real_save = Checkpoint.save

    def save_then_die(self, step, *a, **k):
        real_save(self, step, *a, **k)
        if step == 2:
            raise KeyboardInterrupt  # stands in for SIGKILL right after a checkpoint

    monkeypatch.setattr(Checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        flow.main([*args, "--out", str(tmp_path / "killed")])
    monkeypatch.setattr(Checkpoint, "save", real_save)
    flow.main([*args, "--out", str(tmp_path / "killed"), "--resume"])
    a = hub.load_safetensors(tmp_path / "whole" / "mnist-flow.safetensors")
    b = hub.load_safetensors(tmp_path / "killed" / "mnist-flow.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = (tmp_path / "killed" / "logs" / "mnist-flow.jsonl").read_text()
    assert '"resumed_at": 3' in log and '"step": 0' in log  # the log of the first attempt is kept


def test_attr_proxy_quick_writes_a_card_like_the_bundled_one_and_is_deterministic(tmp_path):
    """`mnist-attr-proxy`'s training script: the card has the bundled card's fields, the weights load through the hub,
    and two runs give bit-identical weights."""
    from rewardsteer.train import attr_proxy

    torch.set_num_threads(1)
    for run in ("a", "b"):
        attr_proxy.main(["--quick", "--out", str(tmp_path / run), "--threads", "1"])
    card = json.loads((tmp_path / "a" / "mnist-attr-proxy.json").read_text())
    bundled = hub.model_card("mnist-attr-proxy")
    assert set(card) == set(bundled) and set(card["metrics"]) == set(bundled["metrics"])
    assert card["architecture"] == bundled["architecture"] and card["training"]["seed"] == bundled["training"]["seed"]
    assert set(card["metrics"]["r2_test"]) == set(attr_proxy.NAMES) and "PGD on 32 test digits" in card["metrics"]["hacking"]
    assert card["command"].startswith("python -m rewardsteer.train.attr_proxy")
    net = hub.load_network("mnist-attr-proxy", tmp_path / "a")
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 5)
    a = hub.load_safetensors(tmp_path / "a" / "mnist-attr-proxy.safetensors")
    b = hub.load_safetensors(tmp_path / "b" / "mnist-attr-proxy.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_time_classifier_quick_writes_weights_and_its_log_norm_table(tmp_path):
    """`mnist-flow-tclassifier`'s script: weights, a card with the log Z_c(t) table the emergent sampler reads, and
    `--log-norm-only` recomputing the same table from the saved weights."""
    from rewardsteer.train import time_classifier

    torch.set_num_threads(1)
    time_classifier.main(["--quick", "--out", str(tmp_path), "--threads", "1"])
    name = time_classifier.NAME
    card = json.loads((tmp_path / f"{name}.json").read_text())
    assert "python -m rewardsteer.train.time_classifier" in card["command"] and card["training"]["seed"] == 0
    assert set(card["metrics"]["test_by_t"]) == {f"t={t}" for t in time_classifier.EVAL_TIMES}
    table = card["class_log_norm"]
    assert table["power"] == 2.0 and len(table["t"]) == 21 and torch.tensor(table["log_z"]).shape == (21, 10)
    assert torch.tensor(table["log_z"]).le(0).all()  # log E[p^w] of probabilities
    net = hub.load_network(name, tmp_path)
    assert net(torch.zeros(2, 1, 28, 28), 0.5).shape == (2, 10)
    time_classifier.main(["--quick", "--out", str(tmp_path), "--threads", "1", "--log-norm-only"])
    assert json.loads((tmp_path / f"{name}.json").read_text())["class_log_norm"] == table


def test_killed_time_classifier_training_resumes_bit_identically(tmp_path, monkeypatch):
    """Its stream is a function of the step (t, ε seeded by the step, batches by the epoch), and model, EMA,
    AdamW moments and schedule come back from the checkpoint: killed and resumed = uninterrupted."""
    from rewardsteer.bundled.training import Checkpoint
    from rewardsteer.train import time_classifier

    torch.set_num_threads(1)
    args = ["--steps", "5", "--batch", "4", "--threads", "1", "--every", "0", "--eval-size", "20", "--norm-images", "10"]
    time_classifier.main([*args, "--out", str(tmp_path / "whole")])
    real_save = Checkpoint.save

    def save_then_die(self, step, *a, **k):
        real_save(self, step, *a, **k)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        time_classifier.main([*args, "--out", str(tmp_path / "killed")])
    monkeypatch.setattr(Checkpoint, "save", real_save)
    time_classifier.main([*args, "--out", str(tmp_path / "killed"), "--resume"])
    name = time_classifier.NAME
    a = hub.load_safetensors(tmp_path / "whole" / f"{name}.safetensors")
    b = hub.load_safetensors(tmp_path / "killed" / f"{name}.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_time_classifier_batches_follow_the_epoch_permutations():
    from rewardsteer.train.time_classifier import EpochOrder

    order = EpochOrder(10, 4, seed=3)  # 2 batches per epoch, the last 2 images of each permutation unused
    batches = [next(order) for _ in range(5)]
    for step, idx in enumerate(batches):
        epoch, k = divmod(step, 2)
        perm = torch.randperm(10, generator=torch.Generator().manual_seed(3 * 1000 + epoch))
        assert torch.equal(idx, perm[4 * k:4 * k + 4])
