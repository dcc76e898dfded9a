"""Guided generation. First piece: objectives from TOML and an oracle with a cache and a budget.

``Objective.from_toml(path)`` builds a scoring function (components -> desirability transforms ->
weighted geometric or arithmetic mean); ``Oracle(objective, budget=...)`` adds the cache by
canonical SMILES and the hard budget of oracle calls that an RL loop or latent optimiser runs
against. See :mod:`molgen.guide.objectives`, :mod:`molgen.guide.components`,
:mod:`molgen.guide.transforms`.
"""

from __future__ import annotations

from molgen.guide import pmo  # registers the component kind "pmo" (PMO / GuacaMol tasks)
from molgen.guide.components import COMPONENTS, Component, register
from molgen.guide.objectives import BudgetExhausted, Objective, Oracle
from molgen.guide.transforms import TRANSFORMS, Transform, parse_transform

__all__ = ["Objective", "Oracle", "BudgetExhausted", "COMPONENTS", "Component", "register", "TRANSFORMS",
           "Transform", "parse_transform", "pmo"]


def __getattr__(name: str):
    """``mg.guide.rl``, ``mg.guide.latent``, ...: the submodules load on first use (torch, cma)."""
    import importlib

    if name in ("rl", "latent", "memory", "runlog", "components", "objectives", "transforms"):
        return importlib.import_module(f"molgen.guide.{name}")
    raise AttributeError(f"module 'molgen.guide' has no attribute {name!r}")
