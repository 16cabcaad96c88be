"""Bradley-Terry reward models: training raises held-out pairwise accuracy; the CLI saves loadable models."""

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from rewardsteer.cli import cli
from rewardsteer.errors import RewardsteerError
from rewardsteer.models import reward_from_spec
from rewardsteer.rewards.base import Ensemble
from rewardsteer.rewards.preference import BTReward, load_pairs, pairwise_accuracy, split_pairs, train_bradley_terry


def bar_pairs(n, seed, size=12):
    """Images of random horizontal and vertical bars; the one with more (horizontal − vertical) bars is
    preferred. Orientation, not ink, decides, so an untrained network scores near chance. Ties dropped."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(2 * n, 1, size, size)
    h, v = torch.randint(0, 4, (2 * n,), generator=g), torch.randint(0, 4, (2 * n,), generator=g)
    for i in range(2 * n):
        for vertical, count in ((False, h[i]), (True, v[i])):
            for _ in range(int(count)):
                r, c = (int(t) for t in torch.randint(0, size - 5, (2,), generator=g))
                if vertical:
                    x[i, 0, r:r + 5, c] = 1
                else:
                    x[i, 0, r, c:c + 5] = 1
    s = (h - v).float()
    a, b, sa, sb = x[:n], x[n:], s[:n], s[n:]
    keep = sa != sb
    a_wins = (sa > sb)[keep][:, None, None, None]
    a, b = a[keep], b[keep]
    return torch.where(a_wins, a, b), torch.where(a_wins, b, a)


def test_training_raises_heldout_pairwise_accuracy():
    pref, rej = bar_pairs(300, 0)
    a, b, ha, hb = split_pairs(pref, rej, 0.25, seed=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        before = pairwise_accuracy(BTReward(train_bradley_terry(a, b, seed=0, epochs=1, lr=1e-9), "r"), ha, hb)
    net = train_bradley_terry(a, b, seed=0, epochs=4)
    after = pairwise_accuracy(BTReward(net, "r"), ha, hb)
    assert after > 0.8 and after > before + 0.2, (before, after)
    again = train_bradley_terry(a, b, seed=0, epochs=4)  # deterministic given the seed
    torch.testing.assert_close(BTReward(again, "r")(ha), BTReward(net, "r")(ha))


def test_cli_trains_an_ensemble_loadable_as_a_reward(tmp_path):
    pref, rej = bar_pairs(120, 1)
    save_file({"preferred": pref, "rejected": rej}, str(tmp_path / "pairs.safetensors"))
    out = tmp_path / "rm"
    res = CliRunner().invoke(cli, ["train-reward", str(tmp_path / "pairs.safetensors"), "--out", str(out),
                                   "--members", "2", "--bootstrap", "--epochs", "2"])
    assert res.exit_code == 0, res.output
    assert "held-out pairwise accuracy" in res.output and (out / "bt-1.json").is_file()
    ens = reward_from_spec(f"bt:{out}")
    assert isinstance(ens, Ensemble) and set(ens.members) == {"bt-0", "bt-1"}
    single = reward_from_spec(f"bt:{out / 'bt-0.safetensors'}")
    torch.testing.assert_close(single(pref[:4]), ens.member_scores(pref[:4])["bt-0"])


def test_bad_pairs_file_is_named(tmp_path):
    save_file({"good": torch.rand(4, 1, 8, 8)}, str(tmp_path / "p.safetensors"))
    with pytest.raises(RewardsteerError, match="'preferred' and 'rejected'"):
        load_pairs(tmp_path / "p.safetensors")
