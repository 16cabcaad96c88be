"""Molecules: tokens, RDKit oracles, the masked diffusion network and the molecule run's outputs.

Everything here runs on a tiny random-weight network over a vocabulary built from a few MOSES molecules,
so it needs RDKit and SELFIES but no trained weights.
"""

import csv
import math

import pytest
import torch

pytest.importorskip("rdkit", reason="molecule tests need RDKit (pip install 'rewardsteer[molecules]')")
pytest.importorskip("selfies", reason="molecule tests need selfies (pip install 'rewardsteer[molecules]')")

import rewardsteer as rs  # noqa: E402
from rewardsteer.bundled.mol_nets import MaskedDiffusionTransformer, masked_diffusion_loss  # noqa: E402
from rewardsteer.errors import RewardsteerError  # noqa: E402
from rewardsteer.molecules import MoleculeSampler, chem  # noqa: E402
from rewardsteer.molecules.data import MASK, PAD, Vocabulary, read_smiles_file, to_tokens  # noqa: E402
from rewardsteer.molecules.report import write_molecule_report  # noqa: E402
from rewardsteer.molecules.rewards import ORACLES, reward, score_smiles  # noqa: E402

MOLECULES = ["CCCS(=O)c1ccc2[nH]c(=NC(=O)OC)[nH]c2c1", "CC(C)(C)C(=O)C(Oc1ccc(Cl)cc1)n1ccnc1",
             "Cc1c(Cl)cccc1Nc1ncccc1C(=O)OCC(O)CO", "Cn1cnc2c1c(=O)n(CC(O)CO)c(=O)n2C", "CC1Oc2ccc(Cl)cc2N(CC(O)CO)C1=O"]


@pytest.fixture(params=["selfies", "smiles"])
def vocab(request):
    rep = request.param
    return Vocabulary.build([to_tokens(s, rep) for s in MOLECULES], rep, length=40)


def test_tokens_round_trip_to_the_same_molecule(vocab):
    ids = vocab.encode(MOLECULES)
    assert ids.shape == (5, 40) and ids.dtype == torch.long
    assert (ids == vocab.mask_id).sum() == 0 and (ids[:, -1] == vocab.pad_id).all()
    assert [chem.canonical(s) for s in vocab.decode(ids)] == [chem.canonical(s) for s in MOLECULES]
    assert vocab.tokens[:2] == [PAD, MASK]


def test_bad_molecules_are_named(vocab):
    with pytest.raises(RewardsteerError, match=r"molecule 1 \(CBr\): unknown token '\[?Br\]?'"):
        vocab.encode(["CC", "CBr"])
    with pytest.raises(RewardsteerError, match="longer than the model's context of 40"):
        vocab.encode(["C" * 41])


def test_smiles_file_names_the_invalid_line(tmp_path):
    path = tmp_path / "in.smi"
    path.write_text("SMILES\nCCO ethanol\n\n# a comment\nC1CC\nc1ccccc1\n")
    with pytest.raises(RewardsteerError, match=r"in.smi:5: invalid SMILES 'C1CC'"):
        read_smiles_file(path)
    assert read_smiles_file(path, "skip") == (["CCO", "c1ccccc1"], [5])
    with pytest.raises(RewardsteerError, match="not found"):
        read_smiles_file(tmp_path / "missing.smi")


def test_oracles_are_rdkit_and_invalid_molecules_get_the_documented_score(vocab):
    from rdkit.Chem import QED, Crippen

    ids = vocab.encode(MOLECULES[:2])
    qed = reward("qed", vocab)
    m = chem.mol(MOLECULES[0])
    assert float(qed(ids)[0]) == pytest.approx(QED.qed(m), abs=1e-6)
    assert float(reward("logp", vocab)(ids)[0]) == pytest.approx(Crippen.MolLogP(m), abs=1e-5)
    assert 1 <= chem.sa(m) <= 10
    empty = torch.full((1, vocab.length), vocab.pad_id)  # decodes to no molecule
    for name, (_, invalid) in ORACLES.items():
        r = reward(name, vocab)
        value = r(empty)
        assert value.item() == invalid and r.invalid == 1 and not torch.isnan(value).any()


def test_multi_objective_is_a_weighted_sum_with_visible_members(vocab):
    multi = reward("qed_sa_mw", vocab)
    ids = vocab.encode(MOLECULES)
    total, members = multi.evaluate(ids)
    assert set(members) == {"qed", "sa_ok", "mw_ok"}
    assert torch.allclose(total, members["qed"] + members["sa_ok"] + members["mw_ok"])
    assert torch.allclose(total, torch.tensor(score_smiles("qed_sa_mw", MOLECULES)))
    mw = torch.tensor([chem.mw(chem.mol(s)) for s in MOLECULES])
    expected = -torch.clamp(torch.maximum(250 - mw, mw - 450), min=0) / 100
    assert torch.allclose(members["mw_ok"], expected.float(), atol=1e-6)


def test_network_follows_subs_and_its_loss_is_finite():
    net = MaskedDiffusionTransformer(vocab_size=7, length=6, dim=16, depth=1, heads=2, mlp=32, mask_id=1)
    ids = torch.tensor([[2, 1, 3, 1, 0, 0]])
    logp = net(ids)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(1, 6))
    assert (logp[..., 1] == -math.inf).all()  # never [mask]
    assert logp[0, 0, 2] == 0 and logp[0, 2, 3] == 0  # unmasked tokens copied
    loss = masked_diffusion_loss(net, torch.randint(2, 7, (8, 6)), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in net.parameters())


def test_steering_a_molecule_sampler_end_to_end(vocab, tmp_path):
    torch.manual_seed(0)
    net = MaskedDiffusionTransformer(len(vocab), vocab.length, dim=16, depth=1, heads=2, mlp=32).eval()
    sampler = MoleculeSampler(net, vocab, num_steps=6)
    plain = sampler.sample(n=4, generator=torch.Generator().manual_seed(0))
    assert plain.shape == (4, 40) and not (plain == vocab.mask_id).any()
    objective = reward("qed", vocab)
    held = {"valid": rs.molecules.rewards.Validity(vocab)}
    for method in (rs.svdd, rs.fk_steering, rs.trajectory_best_of_n):
        result = method(sampler, objective, n=2, particles=4, heldout=held, progress=False, seed=0)
        assert result.samples.shape == (2, 40) and torch.isfinite(result.scores).all()
        assert result.spent["reward_calls"] > 0 and "valid" in result.heldout_scores
    paths = write_molecule_report(result, vocab, tmp_path / "run")
    lines = paths["smiles"].read_text().splitlines()
    assert len(lines) == 4 and lines[0].split("\t")[1] == "steered_0"
    rows = list(csv.DictReader(paths["table"].open()))
    assert [r["set"] for r in rows] == ["steered"] * 2 + ["unsteered"] * 2
    assert paths["grid"].stat().st_size > 0 and (tmp_path / "run" / "result.json").is_file()


def test_reward_names_decoder_memo_validity_and_monitors(vocab):
    from rewardsteer.errors import UnknownNameError
    from rewardsteer.molecules.rewards import MoleculeDecoder, OracleReward, Validity, gold_monitors
    from rewardsteer.rewards.aggregates import Transform

    ids = vocab.encode(MOLECULES[:3])
    decoder = MoleculeDecoder(vocab, size=2)
    assert all(m is not None for m in decoder(ids))
    assert len(decoder.memo) == 2 and tuple(ids[0].tolist()) not in decoder.memo  # oldest entry evicted
    assert decoder(ids[2:])[0] is decoder.memo[tuple(ids[2].tolist())]  # memoized: the same molecule object
    empty = torch.full((1, vocab.length), vocab.pad_id)
    both = torch.cat([ids[:1], empty])
    assert Validity(vocab)(both).tolist() == [1.0, 0.0] and Validity(vocab).name == "valid"
    qed = OracleReward("qed", vocab)
    assert not qed.differentiable and qed.name == "qed" and qed.invalid_score == 0.0
    assert qed(both)[1] == 0.0 and qed.invalid == 1 and qed(both).dtype == torch.float32
    assert qed(both).tolist()[0] == pytest.approx(score_smiles("qed", MOLECULES[:1])[0], abs=1e-6)
    with pytest.raises(UnknownNameError):
        OracleReward("tanimoto", vocab)
    with pytest.raises(UnknownNameError):
        score_smiles("tanimoto", MOLECULES[:1])
    assert score_smiles("qed", ["not a molecule"]) == [0.0] and score_smiles("qed_sa_mw", ["C1CC"]) == [-8.5]
    multi = reward("qed_sa_mw", vocab)
    assert multi.name == "qed_sa_mw" and multi.weights == {"qed": 1.0, "sa_ok": 1.0, "mw_ok": 1.0}
    decoders = {id(r.decoder) for r in multi.members.values()}
    assert len(decoders) == 1  # one shared memo for the three oracles
    monitors = gold_monitors(vocab)
    assert list(monitors) == ["valid", "qed", "neg_sa", "logp"] and len({id(r.decoder) for r in monitors.values()}) == 1
    assert isinstance(multi.transform, Transform) and reward("neg_sa", vocab).name == "neg_sa"
