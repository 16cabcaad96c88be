"""MOSES molecules (Polykovskiy et al. 2020, "Molecular Sets") and the token vocabularies of the molecule model.

The SMILES come from the `molsets` 0.3.1 wheel's own files (`moses/dataset/data/{train,test,test_scaffolds}.csv.gz`:
1,584,663 / 176,074 / 176,225 molecules), read as text straight from the wheel, which is never installed.

Two representations, one `Vocabulary` type:
- SELFIES (Krenn et al. 2020): every token string decodes to a valid molecule, so validity is structural;
- SMILES: the regex tokenizer of Schwaller et al. 2018 (brackets, two-letter halogens, ring bonds).
A sequence is the molecule's tokens padded with `[pad]` to the model's context; `[mask]` is the absorbing state
of the masked diffusion and is never a data token.
"""

from __future__ import annotations

import gzip
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import RewardsteerError

MOSES_LICENSE = "MIT (MOSES, Polykovskiy et al. 2020; data derived from ZINC Clean Leads)"
SPLITS = ("train", "test", "test_scaffolds")
PAD, MASK = "[pad]", "[mask]"
_SMILES_TOKEN = re.compile(r"(\[[^\]]+\]|Br|Cl|Si|Se|se|@@|%[0-9]{2}|[BCNOPSFIbcnops]"
                           r"|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|\*|\$|[0-9])")


MOSES_WHEEL = "molsets-0.3.1-py3-none-any.whl"


def moses_wheel() -> Path:
    """The molsets wheel `make dev` downloads (never installed: it ships a top-level `tests` package that
    shadows ours, and stale pins). Looked up in $REWARDSTEER_MOSES_WHEEL, then <prefix>/share/rewardsteer."""
    candidates = [Path(os.environ["REWARDSTEER_MOSES_WHEEL"])] if os.environ.get("REWARDSTEER_MOSES_WHEEL") else []
    candidates.append(Path(sys.prefix) / "share" / "rewardsteer" / MOSES_WHEEL)
    for path in candidates:
        if path.is_file():
            return path
    raise RewardsteerError(f"the MOSES data ships in the molsets wheel: `make dev`, or pip download --no-deps "
                           f"molsets==0.3.1 -d {candidates[-1].parent} (or set REWARDSTEER_MOSES_WHEEL)")


def load_moses(split: str = "train", limit: int | None = None) -> list[str]:
    """The SMILES of a MOSES split, in file order (`limit` keeps the first ones), read from the wheel."""
    if split not in SPLITS:
        raise RewardsteerError(f"unknown MOSES split '{split}'; available: {', '.join(SPLITS)}")
    with zipfile.ZipFile(moses_wheel()) as wheel, wheel.open(f"moses/dataset/data/{split}.csv.gz") as raw, \
            gzip.open(raw, "rt") as f:
        header = f.readline().strip()
        if header != "SMILES":
            raise RewardsteerError(f"unexpected MOSES file header {header!r} in {split}.csv.gz")
        lines = []
        for line in f:
            if limit is not None and len(lines) >= limit:
                break
            lines.append(line.strip())
    return lines


def split_smiles(smiles: str) -> list[str]:
    tokens = _SMILES_TOKEN.findall(smiles)
    if "".join(tokens) != smiles:
        raise RewardsteerError(f"cannot tokenize SMILES {smiles!r}")
    return tokens


def to_tokens(smiles: str, representation: str) -> list[str]:
    """A SMILES string as the tokens of `representation` ('selfies' or 'smiles')."""
    if representation == "smiles":
        return split_smiles(smiles)
    import selfies

    try:
        return list(selfies.split_selfies(selfies.encoder(smiles)))
    except selfies.EncoderError as e:
        raise RewardsteerError(f"SELFIES cannot encode {smiles!r}: {e}") from None


def from_tokens(tokens: list[str], representation: str) -> str:
    """Tokens (pads and masks dropped) back to a SMILES string; SELFIES are decoded by `selfies`."""
    body = "".join(t for t in tokens if t not in (PAD, MASK))
    if representation == "smiles":
        return body
    import selfies

    try:
        return selfies.decoder(body) or ""
    except selfies.DecoderError:
        return ""


@dataclass
class Vocabulary:
    """Token <-> id map of one representation; ids 0 and 1 are `[pad]` and `[mask]`."""

    tokens: list[str]
    representation: str
    length: int  # the model's context: every sequence is padded to it

    def __post_init__(self):
        if self.tokens[:2] != [PAD, MASK]:
            raise ValueError("a vocabulary starts with [pad], [mask]")
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def mask_id(self) -> int:
        return 1

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, token_lists: list[list[str]], representation: str, length: int) -> Vocabulary:
        seen = sorted({t for toks in token_lists for t in toks})
        return cls([PAD, MASK, *seen], representation, length)

    def encode_tokens(self, tokens: list[str], where: str = "") -> list[int]:
        unknown = [t for t in tokens if t not in self.index or t in (PAD, MASK)]
        if unknown:
            raise RewardsteerError(f"{where}unknown token {unknown[0]!r} for the {self.representation} vocabulary "
                                   f"({len(self.tokens) - 2} tokens: {' '.join(self.tokens[2:])})")
        if len(tokens) > self.length:
            raise RewardsteerError(f"{where}{len(tokens)} tokens, longer than the model's context of {self.length}")
        return [self.index[t] for t in tokens] + [self.pad_id] * (self.length - len(tokens))

    def encode(self, smiles: list[str]) -> torch.Tensor:
        """SMILES -> (N, length) token ids; a bad molecule raises an error naming it."""
        rows = [self.encode_tokens(to_tokens(s, self.representation), where=f"molecule {i} ({s}): ")
                for i, s in enumerate(smiles)]
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), self.length)

    def decode(self, ids: torch.Tensor) -> list[str]:
        """(N, length) ids -> SMILES (empty string where a sequence decodes to no molecule)."""
        return [from_tokens([self.tokens[i] for i in row], self.representation) for row in ids.tolist()]

    def to_config(self) -> dict:
        return {"tokens": self.tokens, "representation": self.representation, "length": self.length}


def read_smiles_file(path: str | Path, on_invalid: str = "stop") -> tuple[list[str], list[int]]:
    """SMILES from a text file (first whitespace-separated field per line; blank lines and '#' comments
    ignored; a 'SMILES' header allowed). An invalid SMILES stops with its line number (`on_invalid="stop"`)
    or is skipped (`"skip"`, its line number returned). Returns (valid SMILES, skipped line numbers)."""
    from . import chem

    if on_invalid not in ("stop", "skip"):
        raise RewardsteerError(f"on_invalid must be 'stop' or 'skip'; got {on_invalid!r}")
    path = Path(path)
    if not path.is_file():
        raise RewardsteerError(f"SMILES file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RewardsteerError(f"{path} is not a text file of SMILES (byte {e.start} is not UTF-8)") from None
    kept, skipped = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#") or (number == 1 and fields[0].upper() == "SMILES"):
            continue
        if chem.mol(fields[0]) is None:
            if on_invalid == "stop":
                raise RewardsteerError(f"{path}:{number}: invalid SMILES {fields[0]!r} (use --skip-invalid to skip it)")
            skipped.append(number)
            continue
        kept.append(fields[0])
    return kept, skipped
