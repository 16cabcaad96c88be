"""Every ```python block and every `rewardsteer` line of a ```bash block in README.md and docs/*.md (not
docs/benchmarks) runs here, in document order, one namespace and one working folder per document.

How, so that the whole file stays near a minute of CPU time:
- commands run on the CPU (`--device cuda` becomes `--device cpu`); budgets are shrunk (`shrink_python`,
  `shrink_argv`): iterations to 3, candidates to 8, particles to 2, outputs (`n`) to 4 in Python and 2 on the
  command line, sampler / training steps to 4 (6 for `run --steps`) / 2, batch workers and threads to 1, training
  epochs to 1; a `run` without `--iters` on an iterative method gets `--iters 3`. The README's molecule command
  runs as written (the bar: a gain over plain samples and no alarm).
- a block after `<!-- docs-test: tiny -->` names hub models (SD-Turbo, FLUX, CLIP, PickScore, HPS) and a GPU: it runs
  on the tiny offline pipelines of `rewardsteer hf tiny-pipeline` in their place, on the CPU, in float32 (`to_tiny`).
- a block after `<!-- tested: FILE ... -->` is run by that file (as written), not again here; one after
  `<!-- docs-test: skip (why) -->` is not code (a signature).
- bash lines that are not `rewardsteer` commands (make, pip, hf download, ray start, the GPU benchmark) are listed in
  `NOT_RUN` with the reason; so are the `--ray` lines. scale.md's shard loop runs its four shards in turn.
- the working folder holds what the commands name: jobs.jsonl (scale.md's own jsonl block, shrunk, its pipeline job
  on the tiny pipeline), my.smi, pairs.safetensors, and LAION's aesthetic .pth stand-in for the conversion example.
"""

import os
import re
import shlex
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?:<!--\s*(?P<marker>[^>]*?)\s*-->\s*\n)?^```(?P<lang>python|bash|jsonl)\n(?P<body>.*?)^```",
                   re.S | re.M)
NOT_RUN = {  # bash lines that are not rewardsteer commands, or need what a test machine lacks
    "make ": "the Makefile: `make test` runs this suite",
    "pip install": "installs packages",
    "hf download": "downloads weights (the tiny pipelines stand in for them)",
    "ray start": "starts a Ray cluster",
    "python benchmarks/gpu_reno.py": "CUDA only; tests/test_hf.py runs its --smoke mode",
    "--ray auto": "needs a running Ray cluster; tests/test_batch_ray.py runs the same jobs on a local Ray",
}
AS_WRITTEN = {("README.md", "rewardsteer run --model moses-mdlm --reward qed --method svdd --particles 8 --n 8 --out runs/qed")}


def fences(path: Path):
    """(line number, language, body, marker) of every python / bash / jsonl block, in document order."""
    text = path.read_text()
    for m in FENCE.finditer(text):
        yield text[:m.start("lang")].count("\n") + 1, m["lang"], m["body"], m["marker"] or ""


def tiny_names(tiny: dict) -> dict:
    return {"stabilityai/sd-turbo": tiny["sd"], "stabilityai/stable-diffusion-2-1-base": tiny["sd"],
            "./my-sd-folder": tiny["sd"], "black-forest-labs/FLUX.1-schnell": tiny["flux"],
            "black-forest-labs/FLUX.1-dev": tiny["flux"], "openai/clip-vit-large-patch14": tiny["clip"],
            "yuvalkirstain/PickScore_v1": tiny["clip"], "./hpsv2.1-hf": tiny["clip"]}


def to_tiny(code: str, tiny: dict) -> str:
    """Hub names -> the tiny folders; the GPU -> the CPU; half precision -> float32; image sizes -> 16."""
    for name, path in tiny_names(tiny).items():
        code = code.replace(name, str(path))
    for a, b in [('"cuda"', '"cpu"'), ("torch.float16", "torch.float32"), ("torch.bfloat16", "torch.float32"),
                 ('dtype="bf16"', 'dtype="fp32"'), (" --dtype fp16", ""), ("--device cuda", "--device cpu")]:
        code = code.replace(a, b)
    return re.sub(r"\b(height|width)=\d+", r"\1=16", code)


def shrink_python(code: str) -> str:
    for key, cap in (("iters", 3), ("candidates", 8), ("particles", 2), ("steps", 4), ("n", 4)):
        code = re.sub(rf"\b{key}=(\d+)", lambda m, k=key, c=cap: f"{k}={min(int(m[1]), c)}", code)
        code = re.sub(rf'"{key}": (\d+)', lambda m, k=key, c=cap: f'"{k}": {min(int(m[1]), c)}', code)
    return code


def shrink_argv(argv: list[str]) -> list[str]:
    argv = ["cpu" if a == "cuda" else a for a in argv]  # this machine has no GPU
    caps = {"--iters": 3, "--candidates": 8, "--particles": 2, "--n": 2, "--workers": 1, "--epochs": 1}
    command = argv[0]
    caps["--steps"] = 2 if command in ("train-noise", "finetune") else 6
    out = list(argv)
    for i, a in enumerate(out[:-1]):
        if a in caps and out[i + 1].isdigit():
            out[i + 1] = str(min(int(out[i + 1]), caps[a]))
    if command in ("train-noise", "finetune") and "--steps" not in out:
        out += ["--steps", "2"]
    if command == "train-reward":
        out += ["--epochs", "1"]
    if command == "batch" and "--threads" not in out:
        out += ["--threads", "1"]  # else cores / workers: OpenMP spin-waits on shared cores
    method = out[out.index("--method") + 1] if "--method" in out else "reno"
    if command == "run" and method in ("reno", "random_search", "zero_order_search") and "--iters" not in out:
        out += ["--iters", "3"]
    return out


def shell_lines(body: str) -> list[str]:
    """The commands of a bash block: continuations joined, comments dropped; a `for i in ...; do ... done` loop
    expanded (its environment assignments, redirections and `&` dropped)."""
    lines, loop = [], None
    for raw in re.sub(r"\\\n\s*", " ", body).splitlines():
        line = raw.split(" #")[0].strip() if not raw.lstrip().startswith("#") else ""
        if m := re.match(r"for (\w+) in ([\w ]+); do$", line):
            loop = (m[1], m[2].split())
        elif line.startswith("done") and loop:
            loop = None
        elif line and loop:
            cmd = re.sub(r"^(\w+=\S+ )+|\s*>\s*\S+|\s*&$", "", line)
            lines += [cmd.replace(f"${loop[0]}", v) for v in loop[1]]
        elif line:
            lines.append(line)
    return lines


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from rewardsteer.hf.tiny import save_tiny

    root = tmp_path_factory.mktemp("tiny")
    sd, flux = save_tiny(root / "sd"), save_tiny(root / "flux", "flux")
    return {"sd": sd["pipeline"], "clip": sd["clip"], "flux": flux["pipeline"]}


def write_inputs(folder: Path, tiny: dict) -> None:
    """What the documents' commands read: jobs.jsonl, my.smi, pairs.safetensors, the aesthetic .pth stand-in."""
    from safetensors.torch import save_file

    jobs = next(body for _, lang, body, _ in fences(ROOT / "docs" / "scale.md") if lang == "jsonl")
    (folder / "jobs.jsonl").write_text(to_tiny(shrink_python(jobs), tiny))
    (folder / "my.smi").write_text("CCO\nc1ccccc1O\nCC(=O)Nc1ccc(O)cc1\n")
    g = torch.Generator().manual_seed(0)
    save_file({"preferred": torch.rand(16, 1, 28, 28, generator=g), "rejected": torch.rand(16, 1, 28, 28, generator=g)},
              str(folder / "pairs.safetensors"))
    head = {"layers.0.weight": torch.randn(8, 16, generator=g), "layers.0.bias": torch.zeros(8),
            "layers.1.weight": torch.randn(1, 8, generator=g), "layers.1.bias": torch.zeros(1)}
    torch.save(head, folder / "sac+logos+ava1-l14-linearMSE.pth")


def run_cli(argv: list[str], where: str) -> None:
    from rewardsteer.cli import main

    try:
        main(argv)
    except SystemExit as e:
        assert e.code in (0, None), f"{where}: `rewardsteer {shlex.join(argv)}` exited {e.code}"


@pytest.mark.parametrize("doc", [p.name for p in DOCS if any(True for _ in fences(p))])
def test_every_example_of_the_document_runs(doc, tiny, tmp_path, monkeypatch, capsys):
    path = ROOT / doc if doc == "README.md" else ROOT / "docs" / doc
    monkeypatch.chdir(tmp_path)
    write_inputs(tmp_path, tiny)
    namespace, ran, skipped, timings = {"__name__": "__docs__"}, 0, [], []
    for line, lang, body, marker in fences(path):
        where, start = f"{doc}:{line}", time.perf_counter()
        if marker.startswith("tested:"):
            assert (ROOT / marker.split()[1]).is_file(), where
            continue
        if marker.startswith("docs-test: skip"):
            skipped.append((where, marker.partition("skip")[2].strip(" ()")))
            continue
        code = to_tiny(body, tiny) if marker.startswith("docs-test: tiny") else body
        if lang == "python":
            exec(compile(shrink_python(code), where, "exec"), namespace)
            ran += 1
        elif lang == "bash":
            for command in shell_lines(code):
                reason = next((why for key, why in NOT_RUN.items() if command.startswith(key) or key in command), None)
                if reason:
                    skipped.append((command, reason))
                    continue
                assert command.startswith("rewardsteer "), f"{where}: not a rewardsteer command: {command}"
                argv = shlex.split(command)[1:]
                if (doc, command) not in AS_WRITTEN:
                    argv = shrink_argv(argv)
                capsys.readouterr()
                run_cli(argv, where)
                ran += 1
                if (doc, command) in AS_WRITTEN:
                    out = capsys.readouterr().out
                    before, after = map(float, re.search(r"score \(svdd, completed\): (\S+) -> (\S+)", out).groups())
                    assert before > 0.4 and after > before + 0.2, out  # plain samples' QED ≈ 0.5, not x̂0's 0.12
                    assert "no over-optimization alarm" in out, out
                timings.append((time.perf_counter() - start, f"{where} {command}"))
                start = time.perf_counter()
        timings.append((time.perf_counter() - start, f"{where} {lang} block"))
    assert ran, doc
    if os.environ.get("DOCS_TIMING"):  # DOCS_TIMING=1 pytest tests/test_docs_examples.py: the slowest, what was not run
        with capsys.disabled():
            print("", *(f"{t:6.1f} s  {what[:110]}" for t, what in sorted(timings, reverse=True)[:6]),
                  *(f"not run: {what[:60]}: {why}" for what, why in skipped), sep="\n")


def test_the_callback_state_keys_are_the_documented_ones():
    """steering.md's table of callback state keys against what each method passes."""
    import rewardsteer as rs
    from rewardsteer.bundled.toy import GaussianMixtureFlow
    from tests.conftest import TOY, Identity

    table = re.findall(r"^\| (`\w+`(?:, `\w+`)*) \| (.*) \|$", (ROOT / "docs" / "steering.md").read_text(), re.M)
    documented = {}
    for methods, keys in table:
        if "`method`" in keys:
            for m in re.findall(r"`(\w+)`", methods):
                documented[m] = set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", keys)))
    assert set(documented) == set(rs.METHODS)
    reward = rs.as_reward(lambda x, c: x.flatten(1)[:, 0], "x0")
    for name in rs.METHODS:
        seen = []
        if name in ("best_of_n", "random_search", "zero_order_search", "reno"):
            gen, knobs = Identity(), dict(n=2, iters=2) if name != "best_of_n" else dict(n=2, candidates=4)
        else:
            gen, knobs = GaussianMixtureFlow(**TOY, num_steps=3), dict(n=2, particles=2)
        rs.METHODS[name](gen, reward, progress=False, callback=lambda s: seen.append(set(s)), **knobs)
        assert seen and all(keys == documented[name] for keys in seen), (name, seen[0], documented[name])
