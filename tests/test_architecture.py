"""The shape of the package (issue 23): no import cycles, small modules, front-ends that never reach into the CLI,
no private names across modules, docs/architecture.md naming only what exists, old module paths still importing."""

import ast
import importlib
import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "rewardsteer"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py")}


def test_no_import_cycles_between_any_two_modules():
    """Tarjan's strongly connected components over grimp's graph (every import, those inside functions too,
    and a package's __init__ with its own submodules)."""
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the dev extra)")
    graph = grimp.build_graph("rewardsteer", cache_dir=None)
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    assert len(graph.modules) > 90 and cycles == []


def test_modules_are_small_and_the_cli_is_only_click_definitions():
    sizes = {name: len(p.read_text().splitlines()) for name, p in modules().items()}
    assert sizes["rewardsteer.cli"] <= 250
    assert {name: n for name, n in sizes.items() if n > 400} == {}


def imports_of(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import in a file, those inside functions included."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def test_front_ends_never_import_the_cli_and_no_module_imports_a_private_name():
    offenders, private = [], []
    for name, path in modules().items():
        for target, names in imports_of(path, name):
            front_end = name.startswith(("rewardsteer.batch", "rewardsteer.serve", "rewardsteer.demo", "rewardsteer.runs"))
            if front_end and target.startswith(("rewardsteer.cli", "rewardsteer.commands")):
                offenders.append((name, target))
            if target.startswith("rewardsteer"):
                private += [(name, target, n) for n in names if n.startswith("_") and not n.startswith("__")]
    assert offenders == [] and private == []


def resolves(dotted: str) -> bool:
    """`a.b.c` names a module of rewardsteer, or an attribute of one (a function, class, constant)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(["rewardsteer", *parts[:cut]]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_name_in_the_architecture_page_exists():
    text = (ROOT / "docs" / "architecture.md").read_text()
    names = set(re.findall(r"\b((?:[a-z_]+\.)+[A-Za-z_]+)\(?", text.replace("rewardsteer.", "")))
    names = {n for n in names if not n.endswith(("toml", "md", "py", "png", "json")) and not n.startswith(("rs.", "e.g"))}
    files = set(re.findall(r"`([a-z_/]+\.py)`", text))
    missing = [n for n in sorted(names) if not resolves(n)]
    missing += [f for f in sorted(files) if not (SRC / f).is_file() and not (ROOT / f).is_file()]
    assert len(names) > 20 and missing == []


@pytest.mark.parametrize("old, name, new", [("rewardsteer.flow", "FlowSampler", "rewardsteer.bundled.flow"),
                                            ("rewardsteer.aggregates", "mean", "rewardsteer.rewards.aggregates"),
                                            ("rewardsteer.judges", "RealismMonitor", "rewardsteer.rewards.monitors"),
                                            ("rewardsteer.hub", "load_safetensors", "rewardsteer.safety"),
                                            ("rewardsteer.methods.common", "BestPerSlot", "rewardsteer.plumbing")])
def test_old_module_paths_import_for_one_release_with_a_deprecation_warning(old, name, new):
    import sys

    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)
