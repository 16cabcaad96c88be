"""What a batch leaves for a person: `table.csv` (one row per job: status, cost, scores, judges) and a contact
sheet of each job's best sample (`contact_sheet.png` for images, `contact_sheet_molecules.png` for molecules)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from .jobs import Job
from .manifest import write_atomic
from .runner import job_dir

BASE_COLUMNS = ("line", "id", "label", "status", "error", "method", "stopped", "seed", "outputs", "score_before",
                "score_after")
COST_COLUMNS = ("nfe", "backward", "reward_calls", "seconds", "peak_memory_mb", "skipped")


def _pair(v):
    return (v[0], v[1]) if isinstance(v, (list, tuple)) and len(v) == 2 else ("", "")


def table_rows(jobs: list[Job], records: dict[str, dict]) -> list[dict]:
    """One flat row per job of the jobs file, in its order (jobs not run yet have status 'pending')."""
    rows = []
    for job in sorted(jobs, key=lambda j: j.line):
        rec = records.get(job.id) or {"status": "pending"}
        before, after = _pair(rec.get("score"))
        row = {"line": job.line, "id": job.id, "label": job.label, "status": rec.get("status"),
               "error": rec.get("error") or "", "method": rec.get("method") or job.options.get("method", ""),
               "stopped": rec.get("stopped") or "", "seed": job.seed, "outputs": rec.get("outputs", ""),
               "score_before": before, "score_after": after}
        agree = _pair(rec.get("judges_agree"))
        row["judges_agree_before"], row["judges_agree_after"] = agree
        for name, v in (rec.get("judges") or {}).items():
            row[f"{name}/acc_before"], row[f"{name}/acc_after"] = _pair(v)
        for name, v in (rec.get("heldout") or {}).items():
            row[f"{name}_before"], row[f"{name}_after"] = _pair(v)
        spent = rec.get("spent") or {}
        row.update({k: spent.get(k, "") for k in COST_COLUMNS})
        row["alarm"] = rec.get("alarm", "")
        row["wall_seconds"] = rec.get("seconds", "")
        rows.append(row)
    return rows


def write_table(rows: list[dict], path: Path) -> Path:
    tail = [*COST_COLUMNS, "alarm", "wall_seconds"]
    columns = list(BASE_COLUMNS)
    for row in rows:  # the scores of every judge and monitor any job has, then the cost
        columns += [k for k in row if k not in columns and k not in tail]
    columns += tail
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()})
    return write_atomic(path, buf.getvalue())


def _best(folder: Path):
    """(best sample, its score) from a job folder's tensors, or None."""
    from ..safety import load_safetensors

    path = folder / "tensors.safetensors"
    if not path.is_file():
        return None
    t = load_safetensors(path)
    scores = torch.nan_to_num(t["scores"].float(), nan=-math.inf)
    i = int(scores.argmax())
    return t["samples"][i], float(t["scores"][i])


def image_sheet(cells: list[tuple[str, torch.Tensor, float]], path: Path, per_row: int = 10) -> Path:
    """Each job's best image with its line number and score under it, `per_row` jobs per row."""
    from PIL import Image, ImageDraw, ImageFont

    from ..report import image_grid

    font = ImageFont.load_default()
    h, w = cells[0][1].shape[-2:]
    scale = 2 if max(h, w) <= 64 else 1
    cell_w, cell_h = max(w * scale, 64) + 4, h * scale + 26
    rows = math.ceil(len(cells) / per_row)
    canvas = Image.new("RGB", (min(len(cells), per_row) * cell_w + 4, rows * cell_h + 4), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (caption, img, score) in enumerate(cells):
        r, c = divmod(k, per_row)
        left, top = 4 + c * cell_w, 4 + r * cell_h
        canvas.paste(image_grid(img[None].float(), nrow=1, pad=0, scale=scale).convert("RGB"), (left, top))
        draw.text((left, top + h * scale + 1), caption, fill=(0, 0, 0), font=font)
        draw.text((left, top + h * scale + 12), f"{score:.3f}" if math.isfinite(score) else "nan", fill=(0, 0, 0),
                  font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return write_atomic(path, buf.getvalue())


def _best_smiles(folder: Path):
    smi = folder / "samples.smi"
    if not smi.is_file():
        return None
    steered = [line.split("\t") for line in smi.read_text().splitlines() if "\tsteered_" in line]
    if not steered:
        return None
    best = max(steered, key=lambda p: float(p[2]) if math.isfinite(float(p[2])) else -math.inf)
    return best[0], float(best[2])


def contact_sheets(jobs: list[Job], records: dict[str, dict], root: Path) -> list[Path]:
    """A sheet of the best sample of every job that produced one, in the jobs file's order."""
    images, molecules = [], []
    for job in sorted(jobs, key=lambda j: j.line):
        rec = records.get(job.id)
        if rec is None or rec.get("status") not in ("done", "failed"):
            continue
        folder = job_dir(root, job.id)
        caption = f"L{job.line}" + ("" if rec["status"] == "done" else " FAIL")
        mol = _best_smiles(folder)
        if mol is not None:
            molecules.append((f"{caption} {mol[1]:.3f}", mol[0]))
            continue
        best = _best(folder)
        if best is not None and best[0].ndim == 3:
            images.append((caption, best[0], best[1]))
    paths = []
    if images:
        paths.append(image_sheet(images, root / "contact_sheet.png"))
    if molecules:
        from ..molecules.report import molecule_grid

        path = root / "contact_sheet_molecules.png"
        tmp = root / ".tmp-contact_sheet_molecules.png"
        molecule_grid([s for _, s in molecules], [c for c, _ in molecules], tmp, per_row=min(6, len(molecules)))
        tmp.replace(path)
        paths.append(path)
    return paths
