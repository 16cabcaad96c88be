"""Nothing breaks at the front door (issue 25): a table of wrong inputs across every command, the web page's form
and the Python API. Each case must meet the contract: exit code 2, exactly one line on stderr starting `error:`,
no traceback, and nothing written that looks like a result. Every case fails before any compute."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rewardsteer.errors import RewardsteerError

pytestmark = pytest.mark.usefixtures("one_thread")
BT_KIND = "bradley-terry reward"


def card(folder: Path, text) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "card.json").write_text(text if isinstance(text, str) else json.dumps(text))


def good_safetensors(path: Path, tensors=None) -> bytes:
    save_file(tensors or {"w": torch.ones(64)}, str(path))
    return path.read_bytes()


def bad_weights(path: Path, how: str) -> None:
    """A weight file that is truncated, has a malformed or 2^62-long header, or is a pickle."""
    data = good_safetensors(path)
    path.write_bytes({"trunc": data[: len(data) // 2], "header": struct.pack("<Q", 12) + b"{not json}!!",
                      "huge": struct.pack("<Q", 2**62) + b"{}", "pickle": pickle.dumps({"w": [1.0] * 8}),
                      "empty": b""}[how])


NOISE_CARD = {"kind": "noise-net", "base": {"name": "mnist-onestep", "noise_shape": [1, 28, 28]}, "conditions": [7],
              "architecture": {"noise_shape": [1, 28, 28], "num_conditions": 1, "width": 8, "blocks": 1}}


def bt(folder: Path, card_text, weights: str | None = None) -> None:
    """A bt: model `folder/m.safetensors` with the card `card_text`; weights good, or made bad by `weights`."""
    folder.mkdir(parents=True, exist_ok=True)
    from rewardsteer.rewards.preference import reward_net

    good_safetensors(folder / "m.safetensors", reward_net(4, 8).state_dict())
    if weights == "keys":
        good_safetensors(folder / "m.safetensors")
    elif weights:
        bad_weights(folder / "m.safetensors", weights)
    (folder / "m.json").write_text(card_text if isinstance(card_text, str) else json.dumps(card_text))


BT_CARD = {"kind": BT_KIND, "architecture": {"class": "Classifier", "config": {"width": 4, "feature_dim": 8,
                                                                               "num_classes": 1, "dropout": 0.0}}}


@pytest.fixture(scope="module")
def F(tmp_path_factory) -> Path:
    """The bad (and a few good) input files every case reads; none of them may change."""
    f = tmp_path_factory.mktemp("inputs")
    (f / "afile").write_text("I am a file\n")
    for how in ("trunc", "header", "huge", "pickle", "empty"):
        card(f / f"am-{how}", NOISE_CARD)
        bad_weights(f / f"am-{how}" / "noise-net.safetensors", how)
    card(f / "am-noarch", {k: v for k, v in NOISE_CARD.items() if k != "architecture"})
    good_safetensors(f / "am-noarch" / "noise-net.safetensors")
    card(f / "am-keys", NOISE_CARD)
    good_safetensors(f / "am-keys" / "noise-net.safetensors")
    card(f / "am-badjson", "{oops")
    card(f / "am-list", [1, 2])
    card(f / "am-kind", {**NOISE_CARD, "kind": "magic"})
    card(f / "am-noweights", NOISE_CARD)
    card(f / "am-badconfig", {**NOISE_CARD, "architecture": {"noise_shape": [1, 28, 28], "width": "wide"}})
    good_safetensors(f / "am-badconfig" / "noise-net.safetensors")
    card(f / "am-lora", {"kind": "lora", "base": {"name": "mnist-onestep"}, "conditions": [7],
                         "lora": {"rank": 4, "alpha": 4, "targets": ["conv"]}})
    bad_weights(f / "am-lora" / "adapter.safetensors", "pickle")
    card(f / "am-lora-nolora", {"kind": "lora", "base": {"name": "mnist-onestep"}, "conditions": [7]})
    good_safetensors(f / "am-lora-nolora" / "adapter.safetensors")
    meta_ok = json.dumps({**dict.fromkeys(("step", "nfe", "backward", "reward_calls", "seconds"), 0), "evals": []})
    for name, meta, weights in (("ckpt-badjson", "{oops", None), ("ckpt-list", "[]", None),
                                ("ckpt-trunc", meta_ok, "trunc")):
        (f / name).mkdir()
        (f / name / "checkpoint.json").write_text(meta)
        good_safetensors(f / name / "checkpoint.safetensors")
        if weights:
            bad_weights(f / name / "checkpoint.safetensors", weights)
    bt(f / "bt-badjson", "{oops")
    bt(f / "bt-list", "[1, 2]")
    bt(f / "bt-config", {**BT_CARD, "architecture": {"class": "Classifier", "config": {"bogus": 1}}})
    bt(f / "bt-noconfig", {**BT_CARD, "architecture": {"class": "Classifier"}})
    bt(f / "bt-negwidth", {**BT_CARD, "architecture": {"class": "Classifier", "config": {"width": -3}}})
    bt(f / "bt-trunc", BT_CARD, "trunc")
    bt(f / "bt-pickle", BT_CARD, "pickle")
    bt(f / "bt-keys", BT_CARD, "keys")
    (f / "bt-empty").mkdir()
    pairs = torch.rand(8, 1, 8, 8)
    save_file({"preferred": pairs, "rejected": pairs.flip(0)}, str(f / "pairs.safetensors"))
    bad_weights(f / "pairs-pickle.safetensors", "pickle")
    bad_weights(f / "pairs-trunc.safetensors", "trunc")
    save_file({"a": pairs, "b": pairs.clone()}, str(f / "pairs-keys.safetensors"))
    save_file({"preferred": pairs, "rejected": pairs[:5].clone()}, str(f / "pairs-shape.safetensors"))
    save_file({"preferred": pairs * 3, "rejected": pairs.clone()}, str(f / "pairs-range.safetensors"))
    save_file({"preferred": pairs * float("nan"), "rejected": pairs.clone()}, str(f / "pairs-nan.safetensors"))
    good = {"class": 3, "method": "best_of_n", "candidates": 4, "n": 1, "reward": "mnist-proxy-0", "robust": "none"}
    (f / "good.jsonl").write_text(json.dumps(good) + "\n")
    (f / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    (f / "bigint.jsonl").write_text('{"class": ' + "7" * 1_000_000 + "}\n")
    (f / "bignum.jsonl").write_text("9" * 1_000_000 + "\n")
    (f / "missing-cells.csv").write_text("class,method,candidates\n3,best_of_n\n")
    (f / "more-cells.csv").write_text("class,method\n3,best_of_n,64\n")
    (f / "binary.csv").write_bytes(b"class,method\n\xff\xfe\x00\x01,best_of_n\n")
    (f / "empty.jsonl").write_text("# nothing\n\n")
    (f / "list.jsonl").write_text("[1, 2]\n")
    (f / "string.jsonl").write_text('"run it"\n')
    (f / "nan.jsonl").write_text('{"lr": NaN}\n')
    (f / "inf.jsonl").write_text('{"budget": {"seconds": Infinity}}\n')
    (f / "bool-class.jsonl").write_text('{"class": true}\n')
    (f / "out-key.jsonl").write_text('{"class": 3, "out": "/tmp/x"}\n')
    (f / "dup.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    (f / "budget-key.jsonl").write_text('{"budget": {"gpus": 1}}\n')
    (f / "budget-zero.jsonl").write_text('{"budget": {"nfe": 0}}\n')
    (f / "amortized.jsonl").write_text(json.dumps({"amortized": str(f / "am-trunc"), "class": 7}) + "\n")
    (f / "amortized-missing.jsonl").write_text('{"amortized": "runs/nn7", "class": 7}\n')
    (f / "bt-job.jsonl").write_text(json.dumps({"reward": f"bt:{f}/bt-badjson/m.safetensors"}) + "\n")
    (f / "many-bad.jsonl").write_text("".join(json.dumps({"class": 10 + i}) + "\n" for i in range(30)))
    (f / "jobs.txt").write_text(json.dumps(good) + "\n")
    (f / "binary.smi").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 50)
    (f / "empty.smi").write_text("# none\n")
    (f / "good.smi").write_text("CCO\nc1ccccc1O\n")
    (f / "invalid.smi").write_text("CCO\nC1CC(\n")
    (f / "long.smi").write_text("C" * 400 + "\n")
    return f


def cli(*args):
    return ("cli", list(args))


def api(fn):
    return ("api", fn)


def page(options, **policy):
    return ("page", (options, policy))


O = ["--out", "{T}/out"]  # an output folder inside the case's own folder
AM = ["run", "--method", "best_of_n", "--amortized"]
PAIRS = ["train-reward", "{F}/pairs.safetensors"]


def tiny_gen():
    from rewardsteer import models

    return models.onestep()


def tiny_reward():
    from rewardsteer import models

    return models.classifier_reward("mnist-proxy-0", 3)


CASES = {
    # --- run: non-finite and out-of-range numbers
    "run max-seconds nan": (cli("run", "--max-seconds", "nan", *O), "finite"),
    "run max-seconds inf": (cli("run", "--max-seconds", "inf", *O), "finite"),
    "run lr nan": (cli("run", "--lr", "nan", *O), "finite"),
    "run lr inf": (cli("run", "--lr", "inf", *O), "finite"),
    "run reg inf": (cli("run", "--reg", "inf", *O), "finite"),
    "run reg nan": (cli("run", "--reg", "nan", *O), "finite"),
    "run lam nan": (cli("run", "--lam", "nan", "--model", "mnist-flow", "--method", "fk", *O), "finite"),
    "run scale inf": (cli("run", "--scale", "inf", "--model", "mnist-flow", "--method", "guidance", *O), "finite"),
    "run alpha -inf": (cli("run", "--alpha", "-inf", *O), "finite"),
    "run max-nfe 0": (cli("run", "--max-nfe", "0", *O), "positive"),
    "run max-nfe huge": (cli("run", "--max-nfe", "9" * 40, *O), "whole number"),
    "run max-nfe 2.5": (cli("run", "--max-nfe", "2.5", *O), "whole number"),
    "run max-backward -1": (cli("run", "--max-backward", "-1", *O), "positive"),
    "run class 11": (cli("run", "--class", "11", *O), "range"),
    "run class seven": (cli("run", "--class", "seven", *O), "whole number"),
    "run n 0": (cli("run", "--n", "0", *O), "range"),
    "run particles 0": (cli("run", "--particles", "0", *O), "range"),
    "run steps 0": (cli("run", "--steps", "0", *O), "range"),
    "run ess 2": (cli("run", "--ess-threshold", "2", *O), "range"),
    "run seed abc": (cli("run", "--seed", "abc", *O), "whole number"),
    "run optimizer lbfgs": (cli("run", "--optimizer", "lbfgs", *O), "not one of"),
    # --- run: names and combinations
    "run model unknown": (cli("run", "--model", "mnist-gan", *O), "unknown generator"),
    "run method unknown": (cli("run", "--method", "magic", *O), "not one of"),
    "run condition seven": (cli("run", "--condition", "seven", *O), "--condition"),
    "run reward unknown": (cli("run", "--reward", "proxy:mnist-proxy-9", *O), "unknown classifier"),
    "run reward proxies:9": (cli("run", "--reward", "proxies:9", *O), "unknown reward"),
    "run heldout unknown": (cli("run", "--heldout", "mnist-judge-cnn", *O), "unknown reward"),
    "run robust spin": (cli("run", "--robust", "shift=2,spin=3", *O), "spin"),
    "run aggregate unknown": (cli("run", "--aggregate", "median", "--reward", "proxies", *O), "median"),
    "run standardize one member": (cli("run", "--standardize", "--reward", "mnist-proxy-0", *O), "ensemble"),
    "run fk on onestep": (cli("run", "--method", "fk", *O), "mnist-flow"),
    "run device bogus": (cli("run", "--device", "toaster", *O), "device"),
    "run molecules das": (cli("run", "--model", "moses-mdlm", "--method", "das", *O), "das"),
    "run molecules image reward": (cli("run", "--model", "moses-mdlm", "--reward", "proxies", *O), "unknown molecule"),
    "run molecules robust": (cli("run", "--model", "moses-mdlm", "--robust", "light", *O), "image option"),
    "run pipeline no prompt": (cli("run", "--pipeline", "{F}/am-list", "--reward", "jpeg", *O), "--prompt"),
    "run pipeline missing folder": (cli("run", "--pipeline", "./missing-pipe", "--prompt", "a", "--reward", "jpeg", *O),
                                    "missing-pipe"),
    "run clip missing folder": (cli("run", "--pipeline", "{F}/am-list", "--prompt", "a cat", "--reward",
                                    "clip:./missing-folder", *O), "no such folder"),
    "run head missing file": (cli("run", "--pipeline", "{F}/am-list", "--prompt", "a cat", "--reward",
                                  "head:./missing.safetensors@./missing-clip", *O), "no such"),
    "run pipeline judge heldout": (cli("run", "--pipeline", "{F}/am-list", "--prompt", "a", "--reward", "jpeg",
                                       "--heldout", "mnist-judge", *O), "MNIST"),
    # --- run: output folder
    "run out /proc": (cli("run", "--out", "/proc/x"), "cannot be written"),
    "run out file/sub": (cli("run", "--out", "{F}/afile/sub"), "is a file"),
    "run out is a file": (cli("run", "--out", "{F}/afile"), "not a folder"),
    # --- run --amortized: bad weights and cards
    "amortized truncated": (cli(*AM, "{F}/am-trunc", *O), "safetensors"),
    "amortized bad header": (cli(*AM, "{F}/am-header", *O), "safetensors"),
    "amortized 2^62 header": (cli(*AM, "{F}/am-huge", *O), "safetensors"),
    "amortized pickle": (cli(*AM, "{F}/am-pickle", *O), "pickle"),
    "amortized empty file": (cli(*AM, "{F}/am-empty", *O), "safetensors"),
    "amortized no architecture": (cli(*AM, "{F}/am-noarch", *O), "architecture"),
    "amortized wrong keys": (cli(*AM, "{F}/am-keys", *O), "does not match"),
    "amortized card bad json": (cli(*AM, "{F}/am-badjson", *O), "card"),
    "amortized card is a list": (cli(*AM, "{F}/am-list", *O), "card"),
    "amortized unknown kind": (cli(*AM, "{F}/am-kind", *O), "unknown kind"),
    "amortized no weights": (cli(*AM, "{F}/am-noweights", *O), "missing"),
    "amortized bad config": (cli(*AM, "{F}/am-badconfig", *O), "architecture"),
    "amortized lora pickle": (cli(*AM, "{F}/am-lora", *O), "pickle"),
    "amortized lora no config": (cli(*AM, "{F}/am-lora-nolora", *O), "lora"),
    "amortized missing folder": (cli(*AM, "./missing-folder", *O), "card.json"),
    "amortized with fk": (cli("run", "--model", "mnist-flow", "--method", "fk", "--amortized", "{F}/am-keys", *O),
                          "one-step"),
    # --- bt: reward models with bad cards or weights
    "bt card bad json": (cli("run", "--reward", "bt:{F}/bt-badjson/m.safetensors", *O), "card"),
    "bt card is a list": (cli("run", "--reward", "bt:{F}/bt-list/m.safetensors", *O), "card"),
    "bt card bad config": (cli("run", "--reward", "bt:{F}/bt-config/m.safetensors", *O), "config"),
    "bt card no config": (cli("run", "--reward", "bt:{F}/bt-noconfig/m.safetensors", *O), "config"),
    "bt card negative width": (cli("run", "--reward", "bt:{F}/bt-negwidth/m.safetensors", *O), "config"),
    "bt truncated weights": (cli("run", "--reward", "bt:{F}/bt-trunc/m.safetensors", *O), "safetensors"),
    "bt pickle weights": (cli("run", "--reward", "bt:{F}/bt-pickle/m.safetensors", *O), "pickle"),
    "bt wrong keys": (cli("run", "--reward", "bt:{F}/bt-keys/m.safetensors", *O), "does not match"),
    "bt empty folder": (cli("run", "--reward", "bt:{F}/bt-empty", *O), "no bradley-terry"),
    "bt folder with bad card": (cli("run", "--reward", "bt:{F}/bt-badjson", *O), "card"),
    "bt missing": (cli("run", "--reward", "bt:./nothing-here", *O), "no bradley-terry"),
    "bt as heldout": (cli("run", "--heldout", "bt:{F}/bt-list/m.safetensors", *O), "card"),
    # --- batch
    "batch binary jobs": (cli("batch", "{F}/binary.jsonl", *O), "binary.jsonl"),
    "batch binary csv": (cli("batch", "{F}/binary.csv", *O), "binary.csv"),
    "batch huge integer": (cli("batch", "{F}/bigint.jsonl", *O), "bigint.jsonl:1"),
    "batch huge number line": (cli("batch", "{F}/bignum.jsonl", *O), "bignum.jsonl:1"),
    "batch csv missing cells": (cli("batch", "{F}/missing-cells.csv", *O), "fewer cells"),
    "batch csv missing cells --check": (cli("batch", "{F}/missing-cells.csv", "--check"), "fewer cells"),
    "batch csv more cells": (cli("batch", "{F}/more-cells.csv", *O), "more cells"),
    "batch missing file": (cli("batch", "{F}/nope.jsonl", *O), "not found"),
    "batch folder as jobs": (cli("batch", "{F}/bt-empty", *O), "bt-empty"),
    "batch wrong suffix": (cli("batch", "{F}/jobs.txt", *O), "JSONL"),
    "batch no jobs": (cli("batch", "{F}/empty.jsonl", *O), "no jobs"),
    "batch list line": (cli("batch", "{F}/list.jsonl", *O), "JSON object"),
    "batch string line": (cli("batch", "{F}/string.jsonl", *O), "JSON object"),
    "batch nan lr": (cli("batch", "{F}/nan.jsonl", *O), "finite"),
    "batch infinite seconds": (cli("batch", "{F}/inf.jsonl", *O), "finite"),
    "batch bool class": (cli("batch", "{F}/bool-class.jsonl", *O), "class"),
    "batch out key": (cli("batch", "{F}/out-key.jsonl", *O), "set by the batch"),
    "batch duplicate jobs": (cli("batch", "{F}/dup.jsonl", *O), "same job"),
    "batch budget key": (cli("batch", "{F}/budget-key.jsonl", *O), "budget"),
    "batch budget zero": (cli("batch", "{F}/budget-zero.jsonl", *O), "positive"),
    "batch amortized bad weights": (cli("batch", "{F}/amortized.jsonl", "--check"), "safetensors"),
    "batch amortized missing": (cli("batch", "{F}/amortized-missing.jsonl", "--check"), "card.json"),
    "batch bt bad card": (cli("batch", "{F}/bt-job.jsonl", *O), "card"),
    "batch 30 bad lines": (cli("batch", "{F}/many-bad.jsonl", *O), "30 invalid"),
    "batch out /proc": (cli("batch", "{F}/good.jsonl", "--out", "/proc/x"), "cannot be written"),
    "batch out file/sub": (cli("batch", "{F}/good.jsonl", "--out", "{F}/afile/sub"), "is a file"),
    "batch out is a file": (cli("batch", "{F}/good.jsonl", "--out", "{F}/afile"), "not a folder"),
    "batch no out": (cli("batch", "{F}/good.jsonl"), "--out"),
    "batch shard bad": (cli("batch", "{F}/good.jsonl", "--shard", "4/2", *O), "--shard"),
    "batch gpus without ray": (cli("batch", "{F}/good.jsonl", "--num-gpus", "1", *O), "--ray"),
    "batch workers 0": (cli("batch", "{F}/good.jsonl", "--workers", "0", *O), "workers"),
    # --- the web page's form (SteeringRun with the page's policy)
    "page bt path not allowed": (page({"reward": ["bt:{F}/bt-keys/m.safetensors"]}), "--allow-path"),
    "page bt home path": (page({"reward": ["bt:~/.ssh/id_rsa"]}), "--allow-path"),
    "page bt outside allow-list": (page({"reward": ["bt:/etc/passwd"]}, allow=["{F}"]), "outside"),
    "page bt dotdot escape": (page({"reward": ["bt:{F}/../../etc/passwd"]}, allow=["{F}"]), "outside"),
    "page bt allowed, bad card": (page({"reward": ["bt:{F}/bt-badjson/m.safetensors"]}, allow=["{F}"]), "card"),
    "page bt allowed, list card": (page({"reward": ["bt:{F}/bt-list/m.safetensors"]}, allow=["{F}"]), "card"),
    "page heldout custom": (page({"heldout": ["mnist-judge-cnn"]}), "unknown reward"),
    "page reward custom": (page({"reward": ["rm -rf /"]}), "unknown reward"),
    "page reward hub id": (page({"reward": ["clip:openai/clip-vit-base-patch32"]}), "unknown reward"),
    "page model custom": (page({"model": "mnist-gan"}), "unknown generator"),
    "page amortized not allowed": (page({"amortized": "{F}/am-keys"}), "--allow-path"),
    "page amortized allowed, pickle": (page({"amortized": "{F}/am-pickle", "method": "best_of_n"}, allow=["{F}"]),
                                       "pickle"),
    "page pipeline not allowed": (page({"pipeline": "stabilityai/sd-turbo", "prompt": "a", "reward": ["jpeg"]}),
                                  "--allow-path"),
    "page device": (page({"device": "cuda:7"}), "device"),
    "page max-nfe over cap": (page({"max_nfe": 10**9}), "cap"),
    "page max-nfe over cap as text": (page({"max_nfe": "20001"}), "cap"),
    "page max-seconds over cap": (page({"max_seconds": 10**7}, max_seconds=60), "cap"),
    "page max-seconds nan": (page({"max_seconds": float("nan")}), "finite"),
    "page class 11": (page({"class": 11}), "range"),
    "page method custom": (page({"method": "magic"}), "not one of"),
    "page robust custom": (page({"robust": "shift=2,n=100000"}), "robust"),
    "page aggregate custom": (page({"aggregate": "quantile:0.5"}), "aggregate"),
    "page steps huge": (page({"model": "mnist-flow", "steps": 10**6}), "cap"),
    # --- demo
    "demo out /proc": (cli("demo", "--out", "/proc/x"), "cannot be written"),
    "demo out file/sub": (cli("demo", "--out", "{F}/afile/sub"), "is a file"),
    "demo out is a file": (cli("demo", "--out", "{F}/afile"), "not a folder"),
    "demo class 10": (cli("demo", "--class", "10", *O), "range"),
    "demo iters 0": (cli("demo", "--iters", "0", *O), "range"),
    # --- models
    "models extra argument": (cli("models", "mnist-flow"), "unexpected extra argument"),
    "models unknown option": (cli("models", "--json"), "No such option"),
    # --- score-smiles
    "smiles binary file": (cli("score-smiles", "{F}/binary.smi"), "binary.smi"),
    "smiles missing file": (cli("score-smiles", "{F}/nope.smi"), "not found"),
    "smiles folder": (cli("score-smiles", "{F}/bt-empty"), "bt-empty"),
    "smiles empty": (cli("score-smiles", "{F}/empty.smi"), "no valid SMILES"),
    "smiles invalid": (cli("score-smiles", "{F}/invalid.smi"), "invalid SMILES"),
    "smiles too long for the model": (cli("score-smiles", "{F}/long.smi"), "long"),
    "smiles proxies-qed": (cli("score-smiles", "{F}/good.smi", "--reward", "proxies-qed"), "RDKit"),
    "smiles unknown reward": (cli("score-smiles", "{F}/good.smi", "--reward", "tastiness"), "tastiness"),
    "smiles out /proc": (cli("score-smiles", "{F}/good.smi", "--out", "/proc/x.csv"), "cannot be written"),
    "smiles out is a folder": (cli("score-smiles", "{F}/good.smi", "--out", "{F}/bt-empty"), "folder"),
    "smiles out file/sub": (cli("score-smiles", "{F}/good.smi", "--out", "{F}/afile/x.csv"), "is a file"),
    # --- train-reward
    "train-reward lr nan": (cli(*PAIRS, "--lr", "nan", *O), "finite"),
    "train-reward lr inf": (cli(*PAIRS, "--lr", "inf", *O), "finite"),
    "train-reward lr 0": (cli(*PAIRS, "--lr", "0", *O), "lr"),
    "train-reward lr -1": (cli(*PAIRS, "--lr", "-1", *O), "lr"),
    "train-reward out /proc": (cli(*PAIRS, "--out", "/proc/x"), "cannot be written"),
    "train-reward out file/sub": (cli(*PAIRS, "--out", "{F}/afile/sub"), "is a file"),
    "train-reward out is a file": (cli(*PAIRS, "--out", "{F}/afile"), "not a folder"),
    "train-reward name escapes": (cli(*PAIRS, "--name", "../../escaped", *O), "--name"),
    "train-reward name with slash": (cli(*PAIRS, "--name", "a/b", *O), "--name"),
    "train-reward name empty": (cli(*PAIRS, "--name", "", *O), "--name"),
    "train-reward pairs pickle": (cli("train-reward", "{F}/pairs-pickle.safetensors", *O), "pickle"),
    "train-reward pairs truncated": (cli("train-reward", "{F}/pairs-trunc.safetensors", *O), "safetensors"),
    "train-reward pairs wrong keys": (cli("train-reward", "{F}/pairs-keys.safetensors", *O), "preferred"),
    "train-reward pairs shapes": (cli("train-reward", "{F}/pairs-shape.safetensors", *O), "(N, C, H, W)"),
    "train-reward pairs range": (cli("train-reward", "{F}/pairs-range.safetensors", *O), "[0, 1]"),
    "train-reward pairs nan": (cli("train-reward", "{F}/pairs-nan.safetensors", *O), "[0, 1]"),
    "train-reward pairs missing": (cli("train-reward", "{F}/nope.safetensors", *O), "does not exist"),
    "train-reward pairs folder": (cli("train-reward", "{F}/bt-empty", *O), "directory"),
    "train-reward heldout 0.9": (cli(*PAIRS, "--heldout-fraction", "0.9", *O), "range"),
    # --- train-noise
    "train-noise lr nan": (cli("train-noise", "--lr", "nan", *O), "finite"),
    "train-noise lr inf": (cli("train-noise", "--lr", "inf", *O), "finite"),
    "train-noise reg inf": (cli("train-noise", "--reg", "inf", *O), "finite"),
    "train-noise reg nan": (cli("train-noise", "--reg", "nan", *O), "finite"),
    "train-noise out /proc": (cli("train-noise", "--out", "/proc/x"), "cannot be written"),
    "train-noise out file/sub": (cli("train-noise", "--out", "{F}/afile/sub"), "is a file"),
    "train-noise out is a file": (cli("train-noise", "--out", "{F}/afile"), "not a folder"),
    "train-noise classes 0-11": (cli("train-noise", "--classes", "0-11", *O), "--classes"),
    "train-noise classes abc": (cli("train-noise", "--classes", "abc", *O), "--classes"),
    "train-noise model unknown": (cli("train-noise", "--model", "mnist-gan", *O), "unknown generator"),
    "train-noise reward unknown": (cli("train-noise", "--reward", "tastiness", *O), "unknown reward"),
    "train-noise bt bad card": (cli("train-noise", "--reward", "bt:{F}/bt-list/m.safetensors", *O), "card"),
    "train-noise robust spin": (cli("train-noise", "--robust", "spin=3", *O), "spin"),
    "train-noise kind unknown": (cli("train-noise", "--kind", "golden", *O), "golden"),
    "train-noise steps 0": (cli("train-noise", "--steps", "0", *O), "range"),
    "train-noise resume bad json": (cli("train-noise", "--resume", "--out", "{F}/ckpt-badjson", "--no-progress"),
                                    "checkpoint"),
    "train-noise resume list": (cli("train-noise", "--resume", "--out", "{F}/ckpt-list", "--no-progress"),
                                "checkpoint"),
    "train-noise resume truncated": (cli("train-noise", "--resume", "--out", "{F}/ckpt-trunc", "--no-progress"),
                                     "safetensors"),
    # --- finetune
    "finetune lr nan": (cli("finetune", "--lr", "nan", *O), "finite"),
    "finetune reg inf": (cli("finetune", "--reg", "inf", *O), "finite"),
    "finetune out /proc": (cli("finetune", "--out", "/proc/x"), "cannot be written"),
    "finetune out is a file": (cli("finetune", "--out", "{F}/afile"), "not a folder"),
    "finetune class 10": (cli("finetune", "--class", "10", *O), "range"),
    "finetune rank 0": (cli("finetune", "--rank", "0", *O), "range"),
    "finetune model unknown": (cli("finetune", "--model", "mnist-gan", *O), "unknown generator"),
    "finetune bt pickle": (cli("finetune", "--reward", "bt:{F}/bt-pickle/m.safetensors", *O), "pickle"),
    # --- bench overopt
    "bench out /proc": (cli("bench", "overopt", "--quick", "--out", "/proc/x"), "cannot be written"),
    "bench out file/sub": (cli("bench", "overopt", "--quick", "--out", "{F}/afile/sub"), "is a file"),
    "bench out is a file": (cli("bench", "overopt", "--quick", "--out", "{F}/afile"), "not a folder"),
    "bench class 10": (cli("bench", "overopt", "--class", "10", *O), "range"),
    "bench seeds 0": (cli("bench", "overopt", "--seeds", "0", *O), "range"),
    "bench unknown benchmark": (cli("bench", "overfit", *O), "No such command"),
    # --- the Python API checks at the top, as the CLI does
    "api default_reward target 11": (api(lambda f: __import__("rewardsteer.models").models.default_reward(target=11)),
                                     "target"),
    "api classifier_reward target '7'": (api(lambda f: __import__("rewardsteer.models").models.classifier_reward(
        "mnist-judge", target="7")), "target=7"),
    "api classifier_reward target -1": (api(lambda f: __import__("rewardsteer.models").models.classifier_reward(
        "mnist-judge", target=-1)), "target"),
    "api judges target 3.5": (api(lambda f: __import__("rewardsteer.models").models.judges(3.5)), "target"),
    "api reward_from_spec target 12": (api(lambda f: __import__("rewardsteer.models").models.reward_from_spec(
        "proxies", 12)), "target"),
    "api best_of_n budget dict": (api(lambda f: __import__("rewardsteer").best_of_n(
        tiny_gen(), tiny_reward(), budget={"nfe": 10})), "Budget(nfe=10)"),
    "api reno budget dict": (api(lambda f: __import__("rewardsteer").reno(
        tiny_gen(), tiny_reward(), budget={"nfe": 10})), "Budget"),
    "api budget seconds nan": (api(lambda f: __import__("rewardsteer").Budget(seconds=float("nan"))), "finite"),
    "api budget nfe 2.5": (api(lambda f: __import__("rewardsteer").Budget(nfe=2.5)), "whole number"),
    "api best_of_n cond '7'": (api(lambda f: __import__("rewardsteer").best_of_n(tiny_gen(), tiny_reward(), cond="7")),
                               "cond=7"),
    "api load_bt list card": (api(lambda f: __import__("rewardsteer.models").models.load_bt(
        f / "bt-list" / "m.safetensors")), "card"),
    "api load_amortized pickle": (api(lambda f: __import__("rewardsteer.amortized").amortized.load_amortized(
        f / "am-pickle", tiny_gen())), "pickle"),
}


def run_case(kind, payload, F: Path, T: Path, run_cli):
    """(exit code, stdout, stderr) of one case, as a user would see it."""
    def fill(s):
        return s.replace("{F}", str(F)).replace("{T}", str(T)) if isinstance(s, str) else s

    if kind == "cli":
        out = run_cli(*[fill(a) for a in payload])
        return out.returncode, out.stdout, out.stderr
    if kind == "api":
        try:
            payload(F)
        except RewardsteerError as e:
            return 2, "", f"error: {e}\n"
        return 0, "", ""
    from rewardsteer.serve import PagePolicy, SteeringRun, one_line

    options, policy = payload
    options = {k: ([fill(v) for v in value] if isinstance(value, list) else fill(value)) for k, value in options.items()}
    policy = {k: ([fill(v) for v in value] if isinstance(value, list) else value) for k, value in policy.items()}
    if "allow" in policy:
        policy["allow_paths"] = policy.pop("allow")
    try:
        SteeringRun(options, T / "out", policy=PagePolicy(**policy))
    except RewardsteerError as e:
        return 2, "", one_line(e) + "\n"
    return 0, "", ""


def files(root: Path) -> dict:
    return {str(p): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_meets_the_contract(name, F, tmp_path, monkeypatch, run_cli):
    (kind, payload), fragment = CASES[name]
    monkeypatch.chdir(tmp_path)  # a default --out (runs/...) would land here
    inputs = files(F)
    code, out, err = run_case(kind, payload, F, tmp_path, run_cli)
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}; stderr: {err[-2000:]}; stdout: {out[-500:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    assert "Traceback" not in err + out
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert files(tmp_path) == {}, "a failed command wrote files"
    assert files(F) == inputs, "a failed command changed its inputs"


def test_the_table_covers_every_command_and_at_least_110_cases():
    commands = {payload[0] if kind == "cli" else kind for (kind, payload), _ in CASES.values()}
    assert {"run", "batch", "page", "demo", "models", "score-smiles", "train-reward", "train-noise", "finetune",
            "bench", "api"} <= commands
    assert len(CASES) >= 110


def test_training_never_saves_non_finite_weights(tmp_path, tiny_onestep, brightness, monkeypatch):
    from rewardsteer.amortized import TrainConfig, train_noise
    from rewardsteer.rewards import preference

    out = tmp_path / "noise"
    with pytest.raises(RewardsteerError, match="lr < 3.4e"):  # finite, but beyond float32: refused up front
        train_noise(tiny_onestep, brightness, config=TrainConfig(lr=1e39), out=out, progress=False)

    def diverge(self, closure=None):  # an update that leaves the weights non-finite
        for group in self.param_groups:
            for p in group["params"]:
                p.data.fill_(float("inf"))

    monkeypatch.setattr(torch.optim.Adam, "step", diverge)
    with pytest.raises(RewardsteerError, match="diverged at step 1"):  # stopped at once, nothing saved
        train_noise(tiny_onestep, brightness, kind="learned-noise", config=TrainConfig(steps=3, batch=2,
                    eval_every=0, checkpoint_every_s=0), out=out, progress=False)
    assert not list(out.glob("*.safetensors")) and not (out / "card.json").exists()
    monkeypatch.undo()

    net = preference.reward_net(4, 8)
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    monkeypatch.setattr(preference, "train_ensemble", lambda *a, **k: ([net], [{}]))
    pairs = torch.rand(4, 1, 8, 8)
    with pytest.raises(RewardsteerError, match="member 0 diverged"):
        preference.train_and_save(pairs, pairs.flip(0), tmp_path / "bt", "bt")
    assert not (tmp_path / "bt").exists()
