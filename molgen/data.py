"""Splitting molecule tables into train / validation / test, the same way for the same seed.

Two splitters, :func:`random_split` and :func:`scaffold_split` (chemprop's balanced Bemis-Murcko
split); each returns three DataFrames that keep the input's index (so a row can be traced back)
and together hold every input row exactly once; invalid SMILES are split like any other row.
The training data of each model (token arrays, graph batches, LightningDataModules) lives with its
task in :mod:`molgen.train.gpt` and :mod:`molgen.train.graph_vae`; the RDKit properties a
conditional GPT learns from (:data:`CONDITION_PROPERTIES`, :func:`property_values`) are here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pandas as pd

from molgen import chem
from molgen.errors import InputError

__all__ = ["random_split", "scaffold_split", "target_split", "CONDITION_PROPERTIES", "property_values"]

Frac = Sequence[float]


def _check_frac(frac: Frac) -> tuple[float, float, float]:
    if len(frac) != 3 or any(f < 0 for f in frac) or not np.isclose(sum(frac), 1.0):
        raise InputError(
            f"split fractions {tuple(frac)} must be three numbers >= 0 that sum to 1, e.g. (0.8, 0.1, 0.1)"
        )
    return float(frac[0]), float(frac[1]), float(frac[2])


def _take(
    df: pd.DataFrame, parts: Sequence[Sequence[int]]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    train, valid, test = (df.iloc[np.asarray(p, dtype=np.int64)] for p in parts)
    return train, valid, test


def random_split(
    df: pd.DataFrame, frac: Frac = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Shuffle rows with ``seed`` and cut them into ``(train, valid, test)`` by ``frac``.

    Sizes are ``floor(frac * n)`` for train and valid; test takes the rest.
    """
    f_train, f_valid, _ = _check_frac(frac)
    n = len(df)
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_valid = int(f_train * n), int(f_valid * n)
    return _take(df, [order[:n_train], order[n_train : n_train + n_valid], order[n_train + n_valid :]])


def target_split(n: int, n_train: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, held_out)`` of a fine-tuning target set: a seeded ``n_train`` of ``n``
    rows to train on and every other row held out (both sorted); the training task and
    :mod:`molgen.finetune`'s report cut the same rows for the same seed."""
    if not 1 <= n_train < n:
        raise InputError(f"n_train = {n_train} must be at least 1 and fewer than the {n} molecules, so some are held out")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def property_weights(values, direction: str = "max", scheme: str = "rank", k: float = 0.1,
                     temperature: float = 1.0) -> np.ndarray:  # fmt: skip
    """Sampling probabilities of training molecules from a measured property, better values drawn more
    often (property-guided fine-tuning).

    - ``scheme="rank"``: ``w ∝ 1 / (k N + rank)``, rank 0 for the best of N: the rank weights of
      Tripp, Daxberger & Hernández-Lobato 2020 ("Sample-efficient optimization in the latent space of
      deep generative models via weighted retraining"); small ``k`` concentrates on the best few,
      large ``k`` tends to uniform; ties share their mean rank.
    - ``scheme="softmax"``: ``w ∝ exp(±z / temperature)`` on the standardised values ``z``.

    Args:
        values: one finite value per molecule.
        direction: ``"max"`` (higher is better) or ``"min"``.

    Returns:
        Probabilities (N,) summing to 1.
    """
    from scipy.stats import rankdata

    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or not len(v) or not np.isfinite(v).all():
        raise InputError(f"property weights need one finite value per molecule; got {int((~np.isfinite(v)).sum())} "
                         f"missing or infinite of {v.size}")  # fmt: skip
    if direction not in ("max", "min"):
        raise InputError(f"weight direction must be 'max' or 'min', not {direction!r}")
    better = v if direction == "max" else -v
    if scheme == "rank":
        w = 1.0 / (k * len(v) + rankdata(-better) - 1)
    elif scheme == "softmax":
        z = (better - better.mean()) / (better.std() or 1.0)
        w = np.exp((z - z.max()) / temperature)
    else:
        raise InputError(f"weight scheme must be 'rank' or 'softmax', not {scheme!r}")
    return w / w.sum()


def scaffold_split(
    df: pd.DataFrame,
    frac: Frac = (0.8, 0.1, 0.1),
    seed: int = 0,
    smiles_col: str = "smiles",
    generic: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split so that no Bemis-Murcko scaffold is shared between train, valid and test.

    The balanced scaffold split of chemprop: scaffold groups too big for half of valid or test
    go first (so they land in train), the rest in a ``seed``-shuffled order; each group fills
    train, then valid, then test. Acyclic molecules share the empty scaffold; a row whose
    SMILES does not parse is a group of its own. Sizes are therefore close to, not exactly,
    ``frac``.

    Args:
        df: the table; ``smiles_col`` holds the SMILES.
        frac: (train, valid, test) fractions, summing to 1.
        seed: shuffles the order of the small scaffold groups.
        generic: group by generic frameworks (all atoms carbon, all bonds single) instead.
    """
    f_train, f_valid, f_test = _check_frac(frac)
    if smiles_col not in df.columns:
        raise InputError(f"no column {smiles_col!r} to split by; columns: {', '.join(map(str, df.columns))}")
    groups: dict[str, list[int]] = {}
    for i, smi in enumerate(df[smiles_col]):
        key = chem.scaffold(smi, generic=generic)
        groups.setdefault(key if key is not None else f"\x00invalid{i}", []).append(i)
    n = len(df)
    n_train, n_valid, n_test = f_train * n, f_valid * n, f_test * n
    big = [g for g in groups.values() if len(g) > n_valid / 2 or len(g) > n_test / 2]
    small = [g for g in groups.values() if not (len(g) > n_valid / 2 or len(g) > n_test / 2)]
    rng = random.Random(seed)
    rng.shuffle(big)
    rng.shuffle(small)
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for group in big + small:
        if len(train) + len(group) <= n_train:
            train += group
        elif len(valid) + len(group) <= n_valid:
            valid += group
        else:
            test += group
    return _take(df, [sorted(train), sorted(valid), sorted(test)])


def _logp(mol) -> float:
    from rdkit.Chem import Crippen

    return Crippen.MolLogP(mol)


def _qed(mol) -> float:
    from rdkit.Chem import QED

    return QED.qed(mol)


def _tpsa(mol) -> float:
    from rdkit.Chem import MolSurf

    return MolSurf.TPSA(mol)


def _mw(mol) -> float:
    from rdkit.Chem import Descriptors

    return Descriptors.MolWt(mol)


#: the RDKit properties a GPT can be conditioned on (``[condition] properties``), by the names and
#: definitions of :mod:`molgen.score`'s columns (Crippen logP, QED, TPSA, average molecular weight),
#: so that a sample's scores measure what it was asked for
CONDITION_PROPERTIES = {"logp": _logp, "qed": _qed, "tpsa": _tpsa, "mw": _mw}


def _properties_chunk(args) -> list[tuple]:
    smiles, names = args
    _block = chem.quiet()  # noqa: F841
    out = []
    for s in smiles:
        mol = chem.to_mol(s)
        out.append(tuple(CONDITION_PROPERTIES[k](mol) for k in names) if mol is not None else (float("nan"),) * len(names))
    return out


def property_values(smiles: Sequence[str], names: Sequence[str], n_jobs: int = 1) -> np.ndarray:
    """The ``names`` properties (:data:`CONDITION_PROPERTIES`) of each molecule, computed once and cached.

    Cached under ``molgen.cache.cache_dir("properties")`` by the sha256 of the SMILES and the names,
    so a conditional training run computes its molecules' properties (about 2.5 ms a molecule, QED
    the slow one) only the first time.

    Shapes:
        returns (len(smiles), len(names)) float64; a row is NaN where RDKit cannot read the SMILES.
    """
    from molgen.cache import cache_dir, sha256_strings
    from molgen.files import atomic_path
    from molgen.parallel import parallel_map

    names = list(names)
    unknown = [k for k in names if k not in CONDITION_PROPERTIES]
    if unknown:
        raise InputError(f"unknown propert{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(CONDITION_PROPERTIES)}")  # fmt: skip
    path = cache_dir("properties") / f"{sha256_strings([*names, '', *smiles])[:32]}.npy"
    if path.exists():
        values = np.load(path)
        if values.shape == (len(smiles), len(names)):
            return values
    values = np.array(parallel_map(_properties_chunk, list(smiles), n_jobs, extra=tuple(names)),
                      dtype=np.float64).reshape(len(smiles), len(names))  # fmt: skip
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, values)
    return values
