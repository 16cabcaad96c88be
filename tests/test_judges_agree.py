"""Held-out judges: each reports its accuracy on the target, `judges_agree` is the all-judges fraction, the
summary and the report say so, and a judge refuses images of a size it was not trained on."""

import pytest
import torch

import rewardsteer as rs
from rewardsteer.budget import Meter
from rewardsteer.errors import RewardsteerError
from rewardsteer.plumbing import score_heldout
from rewardsteer.report import summary_lines
from rewardsteer.rewards.base import ClassifierReward
from rewardsteer.rewards.monitors import alarm_watched


class Fixed(torch.nn.Module):
    """A 'classifier' whose logits are given per sample: its top class is known in advance."""

    input_shape = (1, 2, 2)

    def __init__(self, top):
        super().__init__()
        self.top = torch.tensor(top)

    def forward(self, x):
        return torch.nn.functional.one_hot(self.top[: x.shape[0]], 10).float() * 5


def test_hits_and_agreement_are_computed_per_sample():
    x = torch.zeros(4, 1, 2, 2)
    held = {"a": ClassifierReward(Fixed([3, 3, 1, 3]), "a", 3), "b": ClassifierReward(Fixed([3, 2, 1, 3]), "b", 3),
            "plain": rs.as_reward(lambda s, c: s.flatten(1).sum(1), "plain")}
    out = score_heldout(held, x, None, Meter(None, x.device))
    assert out["a/acc"].tolist() == [1, 1, 0, 1] and out["b/acc"].tolist() == [1, 0, 0, 1]
    assert out["judges_agree"].tolist() == [1, 0, 0, 1]
    assert "plain/acc" not in out and torch.allclose(out["a"][0], torch.log_softmax(torch.eye(10)[3] * 5, 0)[3])
    # the alarm reads the log-probabilities, not the 0/1 hits
    assert alarm_watched("a") and not alarm_watched("a/acc") and not alarm_watched("judges_agree")


def test_summary_and_report_name_every_judge(tiny_onestep, brightness, tmp_path):
    held = {"a": ClassifierReward(Fixed([7] * 8), "a", 7), "b": ClassifierReward(Fixed([7, 1] * 4), "b", 7)}
    for r in held.values():
        r.net.input_shape = (1, 28, 28)
    result = rs.reno(tiny_onestep, brightness, n=8, iters=2, heldout=held, progress=False)
    s = result.summary_dict()
    assert s["judges"] == {"a": [1.0, 1.0], "b": [0.5, 0.5]} and s["judges_agree"] == [0.5, 0.5]
    assert set(s["heldout"]) == {"a", "b"}  # hits are reported apart from the scores
    lines = summary_lines(result)
    assert lines[2] == "judges (target class): a 100% -> 100%, b 50% -> 50%; all agree 50% -> 50%"
    restored = rs.Result.load(result.save(tmp_path))
    assert restored.summary_dict()["judges_agree"] == [0.5, 0.5]


def test_judge_refuses_another_image_size():
    judge = ClassifierReward(Fixed([1]), "mnist-judge-vit", 1)
    with pytest.raises(RewardsteerError, match=r"trained on 1x2x2 images; these samples are 3x8x8"):
        judge(torch.zeros(1, 3, 8, 8))
