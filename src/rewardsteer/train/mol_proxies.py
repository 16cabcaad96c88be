"""Train `moses-proxy-{prop}-{0..k-1}`: fingerprint MLPs fit to noisy RDKit labels, proxies for over-optimization.

Member i gets its own random subset of MOSES train (disjoint from the other members': one seeded permutation,
consecutive slices), labels = RDKit property + Gaussian noise of sd `noise` × the property's sd on that subset,
and its own initialization seed. Each is scored on the first `--test-size` MOSES test molecules against the
clean RDKit property (RMSE, Pearson, Spearman). See `rewardsteer.molecules.proxies`.

    python -m rewardsteer.train.mol_proxies --prop qed --k 3
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from ..bundled.mol_nets import FingerprintMLP
from ..bundled.training import Logger, command_line, save_model, seed_everything
from ..molecules.data import MOSES_LICENSE, load_moses
from ..molecules.proxies import fingerprints

SUBSET_SEED = 2024


def featurize(smiles: list[str], prop: str, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fingerprints (N, bits), clean RDKit property (N,)) of the valid molecules among `smiles`."""
    from ..molecules import chem
    from ..molecules.rewards import ORACLES

    mols = [m for m in map(chem.mol, smiles) if m is not None]
    return fingerprints(mols, bits), torch.tensor([ORACLES[prop][0](m) for m in mols], dtype=torch.float32)


def ranks(x: torch.Tensor) -> torch.Tensor:
    r = torch.empty_like(x)
    r[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
    return r


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


@torch.no_grad()
def metrics(model: FingerprintMLP, x: torch.Tensor, y: torch.Tensor) -> dict:
    pred = model.eval()(x)
    return {"rmse": math.sqrt(F.mse_loss(pred, y).item()), "pearson": pearson(pred, y),
            "spearman": pearson(ranks(pred), ranks(y))}


def train_proxy(x, y, *, epochs: int, seed: int, hidden: int, lr: float = 1e-3, weight_decay: float = 1e-2,
                batch: int = 128) -> FingerprintMLP:
    """MSE on standardized targets with AdamW and a cosine schedule; deterministic given `seed`."""
    gen = seed_everything(seed)
    model = FingerprintMLP(bits=x.shape[1], hidden=hidden)
    model.mean.fill_(y.mean())
    model.std.fill_(y.std())
    target = (y - model.mean) / model.std
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * math.ceil(len(y) / batch))
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(batch):
            loss = F.mse_loss(model.standardized(x[idx]), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prop", default="qed", help="an RDKit oracle of rewardsteer.molecules.rewards.ORACLES")
    p.add_argument("--k", type=int, default=3, help="ensemble members")
    p.add_argument("--train-size", type=int, default=5000, help="molecules per member")
    p.add_argument("--noise", type=float, default=0.05, help="label noise sd, in units of the property's sd")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--bits", type=int, default=2048)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("src/rewardsteer/weights"))
    p.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    a = p.parse_args(argv)
    if a.quick:
        a.k, a.train_size, a.epochs, a.test_size, a.hidden, a.bits = 2, 200, 2, 100, 32, 256
    torch.set_num_threads(a.threads)
    log = Logger(a.out / "logs" / f"mol-proxies-{a.prop}.jsonl")
    start = time.time()
    train = load_moses("train")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SUBSET_SEED))
    x_test, y_test = featurize(load_moses("test", a.test_size), a.prop, a.bits)
    log(stage="data", train_pool=len(train), test=len(y_test), s=round(time.time() - start, 1))
    for i in range(a.k):
        t0 = time.time()
        rows = order[i * a.train_size:(i + 1) * a.train_size].tolist()
        x, y = featurize([train[r] for r in rows], a.prop, a.bits)
        sd = y.std().item()
        noisy = y + a.noise * sd * torch.randn(len(y), generator=torch.Generator().manual_seed(SUBSET_SEED + 1 + i))
        model = train_proxy(x, noisy, epochs=a.epochs, seed=100 + i, hidden=a.hidden)
        scores = {f"test_{k}": round(v, 4) for k, v in metrics(model, x_test, y_test).items()}
        scores["train_spearman_clean"] = round(metrics(model, x, y)["spearman"], 4)
        name = f"moses-proxy-{a.prop}-{i}"
        log(model=name, **scores, s=round(time.time() - t0, 1))
        save_model(model, a.out, name, {
            "kind": "proxy", "role": f"learned proxy of RDKit {a.prop} for over-optimization studies",
            "data": {"dataset": "MOSES", "source": "molsets 0.3.1 wheel, moses/dataset/data/train.csv.gz",
                     "subset": f"{len(y)} train molecules, rows {i * a.train_size}..{(i + 1) * a.train_size - 1} "
                               f"of a seed-{SUBSET_SEED} permutation (disjoint across members); labels = RDKit "
                               f"{a.prop} + N(0, ({a.noise} x sd {sd:.4f})^2) noise (seed {SUBSET_SEED + 1 + i})",
                     "license": MOSES_LICENSE},
            "features": f"Morgan radius 2 count fingerprint, {a.bits} bits, log1p",
            "training": {"epochs": a.epochs, "batch": 128, "optimizer": "AdamW lr 1e-3 wd 1e-2, cosine",
                         "loss": "MSE on standardized noisy labels", "seed": 100 + i,
                         "wall_seconds": round(time.time() - t0, 1)},
            "metrics": {**scores, "test_size": len(y_test),
                        "test_set": f"first {len(y_test)} MOSES test molecules, clean RDKit {a.prop}"},
            "command": command_line("rewardsteer.train.mol_proxies", argv)})
    log(stage="done", s=round(time.time() - start, 1))


if __name__ == "__main__":
    main()
