"""Chemistry rewards by name on the bundled vocabulary: the defaults a user gets from `reward("...")` with no
vocabulary, the proxy ensembles' aggregates, the held-out monitors, and the invalid-molecule counter."""

import pytest
import torch

pytest.importorskip("rdkit", reason="molecule tests need RDKit (pip install 'rewardsteer[molecules]')")
pytest.importorskip("selfies", reason="molecule tests need selfies (pip install 'rewardsteer[molecules]')")

from rewardsteer.molecules import chem  # noqa: E402
from rewardsteer.molecules.rewards import bundled_vocabulary, gold_monitors, reward  # noqa: E402

SMILES = ["CCOc1ccccc1C(=O)N", "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "c1ccc2ccccc2c1"]


@pytest.fixture(scope="module")
def ids():
    return bundled_vocabulary().encode(SMILES)


def test_oracles_default_to_the_bundled_vocabulary(ids):
    want = [chem.qed(chem.mol(s)) for s in SMILES]
    assert reward("qed")(ids).tolist() == pytest.approx(want, abs=1e-6)
    monitors = gold_monitors()
    assert monitors["valid"](ids).tolist() == [1.0, 1.0, 1.0]
    assert monitors["logp"](ids).tolist() == pytest.approx([chem.logp(chem.mol(s)) for s in SMILES], abs=1e-5)


@pytest.mark.parametrize("spec", ["proxies-qed", "proxies-qed:mean", "proxies-qed:wco"])
def test_proxy_specs_name_their_aggregate(spec, ids):
    ens = reward(spec)
    members = ens.member_scores(ids)
    assert sorted(members) == ["proxy-qed-0", "proxy-qed-1", "proxy-qed-2"]
    stacked = torch.stack(list(members.values()))
    want = stacked.min(0).values if spec.endswith("wco") else stacked.mean(0)
    torch.testing.assert_close(ens(ids), want)
    assert not torch.equal(stacked.min(0).values, stacked.mean(0))  # the members disagree: the aggregate shows


def test_invalid_molecules_are_counted_across_calls():
    vocab = bundled_vocabulary()
    qed = reward("qed", vocab)
    empty = torch.full((2, vocab.length), vocab.pad_id)
    qed(empty)
    qed(empty[:1])
    assert qed.invalid == 3


def test_a_given_vocabulary_is_the_one_used(ids):
    """Rewards and monitors decode with the vocabulary they are given, not the bundled one: the same molecules in
    another vocabulary's ids score the same."""
    from rewardsteer.molecules.data import Vocabulary, to_tokens

    vocab = Vocabulary.build([to_tokens(s, "selfies") for s in SMILES], "selfies", length=40)
    own = vocab.encode(SMILES)
    assert own.shape != ids.shape or not torch.equal(own, ids)  # really different ids
    assert gold_monitors(vocab)["qed"](own).tolist() == pytest.approx(reward("qed")(ids).tolist(), abs=1e-6)
    torch.testing.assert_close(reward("proxies-qed", vocab)(own), reward("proxies-qed")(ids))
