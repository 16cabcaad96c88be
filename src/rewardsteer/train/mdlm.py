"""Train `moses-mdlm`: a masked diffusion transformer (MDLM, Sahoo et al. 2024) on MOSES molecules.

Data: a seeded random subset of the MOSES train split (`--train-size` molecules), tokenized as SELFIES or
SMILES and padded to `--length` tokens (longer molecules are dropped and counted). The encoded subset is
cached beside the checkpoint, so a resumed run does not re-encode. Objective: MDLM's NELBO
(`molecules.mdlm.masked_diffusion_loss`). Deterministic, logged as JSON lines, checkpointed every
`--every` seconds; `--resume` continues a killed run with the same batches.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..bundled.mol_nets import MaskedDiffusionTransformer, masked_diffusion_loss
from ..bundled.training import (
    EMA,
    Batches,
    Checkpoint,
    command_line,
    optimizer_step,
    save_model,
    seed_everything,
    start_or_resume,
)
from ..molecules.data import MOSES_LICENSE, Vocabulary, load_moses, to_tokens


def encode_subset(representation: str, size: int, length: int, seed: int, cache: Path | None):
    """(ids (N, length), vocabulary, stats) for `size` random MOSES train molecules; cached in `cache`."""
    if cache is not None and cache.with_suffix(".safetensors").is_file():
        meta = json.loads(cache.with_suffix(".json").read_text())
        return load_file(str(cache.with_suffix(".safetensors")))["ids"], Vocabulary(**meta["vocabulary"]), meta["stats"]
    smiles = load_moses("train")
    order = torch.randperm(len(smiles), generator=torch.Generator().manual_seed(seed))[:size].tolist()
    tokens, dropped = [], 0
    for j in order:
        toks = to_tokens(smiles[j], representation)
        if len(toks) > length:
            dropped += 1
            continue
        tokens.append(toks)
    vocab = Vocabulary.build(tokens, representation, length)
    ids = torch.tensor([vocab.encode_tokens(t) for t in tokens], dtype=torch.long)
    stats = {"moses_train": len(smiles), "drawn": size, "kept": len(tokens), "dropped_longer_than_context": dropped,
             "mean_tokens": round(sum(map(len, tokens)) / len(tokens), 2), "max_tokens": max(map(len, tokens))}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({"ids": ids}, str(cache.with_suffix(".safetensors")))
        cache.with_suffix(".json").write_text(json.dumps({"vocabulary": vocab.to_config(), "stats": stats}))
    return ids, vocab, stats


def train_mdlm(ids: torch.Tensor, vocab: Vocabulary, steps: int, batch: int = 128, lr: float = 1e-3, seed: int = 0,
               arch: dict | None = None, log_path: Path | None = None, threads: int | None = None,
               checkpoint: Checkpoint | None = None, resume: bool = False):
    gen = seed_everything(seed, threads)
    model = MaskedDiffusionTransformer(len(vocab), vocab.length, mask_id=vocab.mask_id, **(arch or {}))
    ema = EMA(model, 0.999)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = min(500, steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    order = Batches(len(ids), batch, gen)
    first, log, start = start_or_resume(checkpoint, resume, log_path, model, ema, opt, sched, gen, order)
    for step in range(first, steps):
        loss = masked_diffusion_loss(model, ids[next(order)], gen)
        optimizer_step(loss, model, opt, sched, ema)
        if step % 50 == 0 or step == steps - 1:
            log(step=step, loss=round(loss.item(), 4), lr=round(sched.get_last_lr()[0], 6))
        if checkpoint is not None and (checkpoint.due() or step == steps - 1):
            checkpoint.save(step, model, ema, opt, sched, gen, order, {"wall_seconds": time.time() - start})
    card = {"training": {"objective": "MDLM continuous-time NELBO, linear schedule alpha_t = 1 - t, SUBS",
                         "steps": steps, "batch": batch, "lr": lr, "optimizer": "AdamW(wd 0.01) + warmup/cosine to 0.1",
                         "ema": 0.999, "seed": seed, "wall_seconds": round(time.time() - start, 1)}}
    return ema.model, card


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--representation", choices=("selfies", "smiles"), default="selfies")
    p.add_argument("--train-size", type=int, default=400_000, help="MOSES train molecules drawn for training")
    p.add_argument("--length", type=int, default=56, help="context (tokens); longer molecules are dropped")
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--mlp", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default="moses-mdlm")
    p.add_argument("--out", type=Path, default=Path("src/rewardsteer/weights"))
    p.add_argument("--checkpoint", type=Path, default=None, help="default: OUT/checkpoints/NAME")
    p.add_argument("--every", type=float, default=180.0)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint if there is one")
    p.add_argument("--quick", action="store_true", help="a tiny run, for tests")
    a = p.parse_args(argv)
    if a.quick:
        a.train_size, a.steps, a.batch, a.dim, a.depth, a.heads, a.mlp = 300, 3, 16, 32, 1, 2, 64
    ckpt = Checkpoint(a.checkpoint or a.out / "checkpoints" / a.name, a.every)
    cache = None if a.quick else ckpt.path.parent / f"{a.name}-data-{a.representation}-{a.train_size}-{a.length}-{a.seed}"
    ids, vocab, stats = encode_subset(a.representation, a.train_size, a.length, a.seed, cache)
    arch = {"dim": a.dim, "depth": a.depth, "heads": a.heads, "mlp": a.mlp}
    model, card = train_mdlm(ids, vocab, a.steps, a.batch, a.lr, a.seed, arch, a.out / "logs" / f"{a.name}.jsonl",
                             a.threads, ckpt, a.resume)
    card = {"kind": "masked-diffusion",
            "data": {"dataset": "MOSES", "source": "molsets 0.3.1 wheel, moses/dataset/data/train.csv.gz",
                     "license": MOSES_LICENSE, **stats},
            "vocabulary": vocab.to_config(), **card, "command": command_line("rewardsteer.train.mdlm", argv)}
    save_model(model, a.out, a.name, card)


if __name__ == "__main__":
    main()
