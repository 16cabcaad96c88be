"""Module paths that moved when the package was sorted into packages by concern (0.2): importing an old path
still works for one release, with a DeprecationWarning naming the new one. `import rewardsteer as rs`,
`rewardsteer.models` and every name in the README never moved.

An old path gives a stand-in module that forwards attribute reads to the new module(s) (`rewardsteer.judges`
was split in two), so the real modules keep their own names and specs.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

OLD_TO_NEW = {
    "rewardsteer.aggregates": ("rewardsteer.rewards.aggregates",),
    "rewardsteer.stacked": ("rewardsteer.rewards.stacked",),
    "rewardsteer.robust": ("rewardsteer.rewards.robust",),
    "rewardsteer.preference": ("rewardsteer.rewards.preference",),
    "rewardsteer.monitor": ("rewardsteer.rewards.monitors",),
    "rewardsteer.judges": ("rewardsteer.bundled.judge_nets", "rewardsteer.rewards.monitors"),
    "rewardsteer.hub": ("rewardsteer.bundled.hub", "rewardsteer.safety"),
    "rewardsteer.nets": ("rewardsteer.bundled.nets",),
    "rewardsteer.flow": ("rewardsteer.bundled.flow",),
    "rewardsteer.masked": ("rewardsteer.bundled.masked",),
    "rewardsteer.toy": ("rewardsteer.bundled.toy",),
    "rewardsteer.data": ("rewardsteer.bundled.data",),
    "rewardsteer.evaluation": ("rewardsteer.bundled.evaluation",),
    "rewardsteer.train.common": ("rewardsteer.bundled.training",),
    "rewardsteer.molecules.mdlm": ("rewardsteer.bundled.mol_nets",),
    "rewardsteer.methods.common": ("rewardsteer.plumbing",),
    "rewardsteer.overopt": ("rewardsteer.bench.overopt",),
    "rewardsteer.overopt_report": ("rewardsteer.bench.overopt_report",),
    "rewardsteer.amortized.command": ("rewardsteer.commands.amortized",),
    "rewardsteer.batch.command": ("rewardsteer.commands.batch",),
    "rewardsteer.serve.command": ("rewardsteer.commands.serve",),
}


class MovedModule(types.ModuleType):
    """Stands in for a moved module: attribute reads go to the first new module that has the name."""

    def __init__(self, name: str, targets: list[types.ModuleType]):
        super().__init__(name, f"moved to {', '.join(t.__name__ for t in targets)}")
        self.__targets = targets

    def __getattr__(self, name: str):
        for module in self.__targets:
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} (moved to {self.__targets[0].__name__}) has no attribute {name!r}")

    def __dir__(self):
        return sorted({n for m in self.__targets for n in dir(m)})


class MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in OLD_TO_NEW else None

    def create_module(self, spec):
        new = OLD_TO_NEW[spec.name]
        warnings.warn(f"{spec.name} moved to {' and '.join(new)}; the old path stops working in rewardsteer 0.3",
                      DeprecationWarning, stacklevel=4)
        return MovedModule(spec.name, [importlib.import_module(n) for n in new])

    def exec_module(self, module):
        pass


def install() -> None:
    """Put the finder in front of the import system (once)."""
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())
