"""molgen: molecular generation with transfer learning.

``import molgen as mg`` is cheap: heavy modules (torch, the models) load on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it; resolved lazily by __getattr__
_LAZY = {
    "chem": "molgen.chem",
    "io": "molgen.io",
    "datasets": "molgen.datasets",
    "score": "molgen.score",
    "metrics": "molgen.metrics",
    "transfer": "molgen.transfer",
    "finetune": "molgen.finetune",
    "guide": "molgen.guide",
    "experiment": "molgen.experiment",
    "sample": "molgen.sample",  # a callable module: mg.sample(model, n) and mg.sample.generate_to_file
    "models": "molgen.models",
    "batch": "molgen.batch",
    "demo": "molgen.demo",
    "report": "molgen.report",  # callable: mg.report(run_dir)
}
# public function -> module that defines it (same name)
_LAZY_FUNCTIONS = {
    "load_pretrained": "molgen.models",
    "evaluate": "molgen.metrics",
}


class _CallableModule(type(importlib)):
    """A module that is also its main function: ``mg.score(...)``, ``mg.sample(...)``, ``mg.report(...)``.

    Importing ``molgen.score`` binds the package attribute ``molgen.score`` to the module, which
    would shadow a function of the same name; a module of this class calls the function instead,
    while ``mg.score.COLUMNS`` and the like stay reachable.
    """

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


def callable_module(name: str) -> None:
    """Make module ``name`` (``molgen.X``) callable as its function ``X``; call at the end of the module."""
    import sys

    sys.modules[name].__class__ = _CallableModule


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        globals()[name] = module
        return module
    if name in _LAZY_FUNCTIONS:
        func = getattr(importlib.import_module(_LAZY_FUNCTIONS[name]), name)
        globals()[name] = func
        return func
    raise AttributeError(f"module 'molgen' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + list(_LAZY_FUNCTIONS))
