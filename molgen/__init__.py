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
}
# public function -> module that defines it (same name)
_LAZY_FUNCTIONS = {
    "load_pretrained": "molgen.models",
    "sample": "molgen.sample",
    "evaluate": "molgen.metrics",
    "report": "molgen.report",
}


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
