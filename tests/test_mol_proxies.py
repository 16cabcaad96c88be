"""Learned molecule proxies: quick training round trip, invalid molecules, and the bundled QED proxies' accuracy."""

import math

import pytest
import torch

pytest.importorskip("rdkit", reason="molecule proxies need RDKit (pip install 'rewardsteer[molecules]')")
pytest.importorskip("selfies", reason="molecule proxies need selfies (pip install 'rewardsteer[molecules]')")

from rewardsteer.bundled import hub  # noqa: E402
from rewardsteer.bundled.mol_nets import FingerprintMLP  # noqa: E402
from rewardsteer.molecules.data import Vocabulary, load_moses, to_tokens  # noqa: E402
from rewardsteer.molecules.proxies import ProxyReward, proxy_ensemble
from rewardsteer.molecules.rewards import ORACLES, OracleReward  # noqa: E402
from rewardsteer.rewards.aggregates import wco  # noqa: E402
from rewardsteer.train import mol_proxies  # noqa: E402

MOLECULES = ["CCCS(=O)c1ccc2[nH]c(=NC(=O)OC)[nH]c2c1", "CC(C)(C)C(=O)C(Oc1ccc(Cl)cc1)n1ccnc1",
             "Cc1c(Cl)cccc1Nc1ncccc1C(=O)OCC(O)CO", "Cn1cnc2c1c(=O)n(CC(O)CO)c(=O)n2C", "CC1Oc2ccc(Cl)cc2N(CC(O)CO)C1=O"]
# measured Spearman vs RDKit QED on the first 200 MOSES test molecules: members 0.82 / 0.81 / 0.83, mean 0.86
MEMBER_BAR, MEAN_BAR = 0.70, 0.75


def selfies_vocab(smiles, length=40):
    tokens = [to_tokens(s, "selfies") for s in smiles]
    return Vocabulary.build(tokens, "selfies", max(length, *map(len, tokens)))


def spearman(a, b):
    return mol_proxies.pearson(mol_proxies.ranks(a), mol_proxies.ranks(b))


@pytest.fixture(scope="module")
def quick_weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("proxies")
    mol_proxies.main(["--quick", "--out", str(out)])
    return out


def test_quick_training_loads_back_with_its_card(quick_weights):
    net = hub.load_network("moses-proxy-qed-0", quick_weights)
    card = hub.model_card("moses-proxy-qed-0", quick_weights)
    assert isinstance(net, FingerprintMLP) and not net.training
    assert card["kind"] == "proxy" and card["data"]["dataset"] == "MOSES" and card["data"]["license"].startswith("MIT")
    assert "noise" in card["data"]["subset"] and "seed" in card["training"]
    assert {"test_rmse", "test_pearson", "test_spearman"} <= set(card["metrics"])
    assert 0.3 < float(net.mean) < 1 and float(net.std) > 0  # the target's statistics came back as buffers
    other = hub.load_network("moses-proxy-qed-1", quick_weights)
    assert not torch.equal(net.net[0].weight, other.net[0].weight)


def test_proxy_reward_scores_valid_molecules_and_gives_invalid_ones_the_oracle_score(quick_weights):
    vocab = selfies_vocab(MOLECULES)
    ids = torch.cat([vocab.encode(MOLECULES), torch.full((2, vocab.length), vocab.pad_id)])  # 2 empty: invalid
    reward = ProxyReward(hub.load_network("moses-proxy-qed-0", quick_weights), vocab, "proxy-qed-0")
    scores = reward(ids)
    assert scores.shape == (7,) and torch.isfinite(scores).all()
    assert scores[5:].tolist() == [ORACLES["qed"][1]] * 2 and reward.invalid == 2
    assert scores[:5].unique().numel() > 1

    ens = proxy_ensemble("qed", vocab, k=2, aggregate=wco(), weights_dir=quick_weights)
    objective, members = ens.evaluate(ids)
    assert list(members) == ["proxy-qed-0", "proxy-qed-1"]
    assert torch.allclose(objective, torch.minimum(*members.values()))
    assert torch.allclose(members["proxy-qed-0"], scores)


@pytest.mark.skipif(not all((hub.WEIGHTS_DIR / f"moses-proxy-qed-{i}.safetensors").is_file() for i in range(3)),
                    reason="bundled moses-proxy-qed-* weights absent: python -m rewardsteer.train.mol_proxies")
def test_bundled_qed_proxies_track_rdkit_qed():
    smiles = load_moses("test", 200)
    vocab = selfies_vocab(smiles)
    ids = vocab.encode(smiles)
    gold = OracleReward("qed", vocab)(ids)
    objective, members = proxy_ensemble("qed", vocab).evaluate(ids)
    for name, scores in members.items():
        assert spearman(scores, gold) > MEMBER_BAR, name
    assert spearman(objective, gold) > MEAN_BAR
    assert not math.isclose(float((objective - gold).abs().mean()), 0.0)  # a proxy, not the oracle
