"""Set-level metrics of generated molecules with the definitions and key names of MOSES.

``evaluate(generated)`` returns the dictionary of MOSES's ``get_all_metrics`` (Polykovskiy et al.
2020) so results line up with published tables, plus GuacaMol's KL and FCD scores:

- ``valid``: fraction of all inputs that parse (invalid strings are counted, never dropped).
- ``unique@1000``, ``unique@10000``: unique canonical SMILES among the first k valid ones.
- Everything else is computed, as in MOSES, on the valid molecules as canonical SMILES,
  duplicates included (Novelty uses the unique ones):
  ``FCD`` (Fréchet ChemNet Distance), ``SNN`` (mean max Tanimoto, Morgan r=2 1024 bits, to the
  reference), ``Frag``/``Scaf`` (cosine of BRICS fragment / Murcko scaffold counts), for the
  MOSES test set (``/Test``) and scaffold test set (``/TestSF``); ``IntDiv``/``IntDiv2``
  (1 − mean pairwise Tanimoto, p=1 and p=2); ``Filters`` (fraction passing the MOSES filters);
  ``Novelty`` (fraction of unique molecules not in the training set, both sides canonical);
  ``logP``, ``SA``, ``QED``, ``weight`` (Wasserstein distance to the test set's values).
- ``KL``: GuacaMol's KL-divergence score; ``FCD_score/Test``: GuacaMol's exp(−0.2·FCD/Test);
  ``n``: number of generated strings evaluated. FCD depends strongly on n: quote them together.
- ``caveats`` (last, a list of short strings, empty when there is nothing to say): what makes a
  number above undefined or hard to compare, e.g. ``"unique@10000 on 100 valid molecules"`` or
  FCD on a few hundred molecules (it needs thousands; MOSES uses 30,000), metrics that are
  undefined (``NaN`` here, ``null`` in JSON), inputs refused as over :data:`molgen.chem.LIMITS`.
  They are returned rather than warned, so a small evaluation prints no Python warnings.

Reference statistics are computed from the whole reference set once and cached on disk
(``molgen.metrics.reference``); the first MOSES evaluation on a machine therefore takes longer.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import wasserstein_distance

from molgen.chem import LIMITS, parse_failure
from molgen.errors import InputError
from molgen.metrics import fcd, kl
from molgen.metrics.features import PROPS, Features, features, smiles_hashes
from molgen.metrics.reference import (
    ReferenceStats,
    moses_reference,
    moses_train_hashes,
    prepare_moses,
    reference_stats,
    train_hashes,
)
from molgen.metrics.similarity import cosine_similarity, internal_diversity, snn
from molgen.parallel import progress_bar

__all__ = ["evaluate", "prepare_moses", "MOSES_KEYS", "EXTRA_KEYS", "fraction_valid", "fraction_unique",
           "novelty"]

MOSES_KEYS = ("valid", "unique@1000", "unique@10000",
              "FCD/Test", "SNN/Test", "Frag/Test", "Scaf/Test",
              "FCD/TestSF", "SNN/TestSF", "Frag/TestSF", "Scaf/TestSF",
              "IntDiv", "IntDiv2", "Filters", "Novelty", "logP", "SA", "QED", "weight")
EXTRA_KEYS = ("KL", "FCD_score/Test", "n")
#: below this many valid molecules FCD gets a caveat (its bias at small n: module docstring of fcd)
FCD_MIN = 1000


def fraction_valid(canon: Sequence[str | None]) -> float:
    """Share of inputs with a canonical SMILES (``None`` marks an invalid one)."""
    return float(np.mean([c is not None for c in canon])) if len(canon) else float("nan")


def fraction_unique(valid_canonical: Sequence[str], k: int | None = None) -> float:
    """Unique share of the first ``k`` valid canonical SMILES (all of them if fewer, as MOSES).

    :func:`evaluate` lists ``unique@k`` on fewer than ``k`` molecules among its ``caveats``.
    """
    head = list(valid_canonical[:k] if k else valid_canonical)
    return len(set(head)) / len(head) if head else float("nan")


def novelty(valid_canonical: Sequence[str], train: np.ndarray) -> float:
    """Share of the unique valid molecules whose canonical SMILES hash is not in ``train``."""
    gen = smiles_hashes(list(valid_canonical), canonical=True)
    if len(gen) == 0:
        return float("nan")
    return float(1 - np.isin(gen, train, assume_unique=True).mean())


def _as_smiles(generated) -> list:
    if isinstance(generated, pd.DataFrame):
        if "smiles" not in generated.columns:
            raise InputError(f"the table has no 'smiles' column (columns found: {list(generated.columns)})")
        return generated["smiles"].tolist()
    if isinstance(generated, str):
        raise InputError("evaluate() takes a list of SMILES, not one string")
    return list(generated)


def _subsample(smiles: list, n: int | None, seed: int) -> list:
    """A seeded random ``n`` of the inputs (kept in input order), or all of them."""
    if n is None or len(smiles) <= n:
        return smiles
    pick = np.sort(np.random.default_rng(seed).choice(len(smiles), n, replace=False))
    return [smiles[i] for i in pick]


def _against(ref: ReferenceStats, gen: Features, gen_fcd, suffix: str) -> dict[str, float]:
    fcd_value = (fcd.frechet_distance(ref.fcd_mu, ref.fcd_sigma, *gen_fcd)
                 if gen_fcd is not None else float("nan"))
    return {
        f"FCD/{suffix}": fcd_value,
        f"SNN/{suffix}": snn(gen.packed, ref.fps, ref.fp_counts),
        f"Frag/{suffix}": cosine_similarity(ref.frags, gen.frags),
        f"Scaf/{suffix}": cosine_similarity(ref.scafs, gen.scafs),
    }


def _references(reference, train, n_jobs: int, progress: bool, device: str | None):
    """(reference stats by key suffix, training hashes or None) for evaluate's arguments."""
    if isinstance(reference, str):
        if reference != "moses":
            raise InputError(f"unknown reference {reference!r}: use 'moses' or a list of SMILES")
        refs = {"Test": moses_reference("test", n_jobs, progress),
                "TestSF": moses_reference("test_scaffolds", n_jobs, progress)}
        train = "moses" if train is None else train
    else:
        refs = {"Test": reference_stats(_as_smiles(reference), n_jobs=n_jobs, progress=progress, device=device)}
    if isinstance(train, str):
        if train != "moses":
            raise InputError(f"unknown train set {train!r}: use 'moses' or a list of SMILES")
        hashes = moses_train_hashes(n_jobs, progress)
    elif train is not None:
        hashes = train_hashes(_as_smiles(train), n_jobs=n_jobs, progress=progress)
    else:
        hashes = None
    return refs, hashes


def _caveats(out: dict, n_valid: int, smiles: list, canon: list) -> list[str]:
    """Short notes on what makes the numbers in ``out`` undefined or hard to compare."""
    notes = []
    too_large = Counter(parse_failure(s) for s, c in zip(smiles, canon, strict=True) if c is None)["too_large"]
    if too_large:
        notes.append(f"{too_large} of {len(smiles)} inputs over molgen's size limits ({LIMITS.max_heavy_atoms:,} "
                     f"heavy atoms, {LIMITS.max_rings:,} rings, {LIMITS.max_smiles_length:,} characters) "
                     "counted as invalid")
    if n_valid == 0:
        return [*notes, "no valid molecules: every metric but valid is undefined (null)"]
    short = [k for k in ("unique@1000", "unique@10000") if k in out and n_valid < int(k.split("@")[1])]
    if short:
        notes.append(f"{' and '.join(short)} on {n_valid:,} valid")
    if n_valid < FCD_MIN:
        fcd_keys = [k for k in out if k.startswith("FCD")]
        notes.append(f"{', '.join(fcd_keys)} on {n_valid:,} molecules: FCD needs thousands to compare "
                     "(MOSES uses 30,000); compare only at equal n")
    undefined = [k for k, v in out.items() if isinstance(v, float) and math.isnan(v)]
    if undefined:
        notes.append(f"undefined (null) on this set: {', '.join(undefined)}")
    return notes


def evaluate(generated, reference="moses", n: int | None = None, n_jobs: int = 2, seed: int = 0,
             progress: bool = False, extra: bool = True, train=None,
             device: str | None = "auto") -> dict:
    """MOSES metrics of a generated set (see the module docstring for each key).

    Args:
        generated: SMILES strings (or a DataFrame with ``smiles``); invalid ones count against
            ``valid`` and are left out of everything else.
        reference: ``"moses"`` (MOSES test and test_scaffolds: all keys) or a list of SMILES
            (then the ``/Test`` keys refer to that list and the ``/TestSF`` keys are absent).
        n: evaluate a seeded random sample of this many inputs (default: all).
        n_jobs: worker processes for RDKit work and threads for ChemNet.
        seed: seed of the ``n`` sample and of the KL samples.
        progress: show progress bars (the first MOSES run computes reference statistics).
        extra: add ``KL``, ``FCD_score/Test`` and ``n``.
        train: training set for ``Novelty``: ``"moses"`` (the default with ``reference="moses"``)
            or a list of SMILES; with a list reference and no ``train``, ``Novelty`` is absent.
        device: where ChemNet runs for FCD ("auto": CUDA when present; the rest is CPU work).

    Returns:
        dict of floats in MOSES's key order (then the extra keys), then ``caveats``: a list of
        short strings (see the module docstring), empty when there is nothing to say.
    """
    smiles = _subsample(_as_smiles(generated), n, seed)
    if not smiles:
        raise InputError("nothing to evaluate: the generated set is empty")
    refs, train_set = _references(reference, train, n_jobs, progress, device)
    gen = features(smiles, generated=True, n_jobs=n_jobs, progress=progress, description="generated")
    valid = gen.valid_smiles
    out: dict[str, float] = {"valid": fraction_valid(gen.canon)}
    out["unique@1000"] = fraction_unique(valid, 1000)
    out["unique@10000"] = fraction_unique(valid, 10000)
    with progress_bar(progress, "generated: ChemNet", len(valid)) as advance:
        acts = fcd.activations(valid, threads=n_jobs, progress=advance, device=device)
    gen_fcd = fcd.fcd_stats(acts) if len(valid) >= 2 else None
    for suffix, ref in refs.items():
        out.update(_against(ref, gen, gen_fcd, suffix))
    out["IntDiv"], out["IntDiv2"] = internal_diversity(gen.packed)
    out["Filters"] = float(gen.passes.mean()) if len(valid) else float("nan")
    if train_set is not None:
        out["Novelty"] = novelty(valid, train_set)
    test = refs["Test"]
    for j, name in enumerate(PROPS):
        out[name] = (float(wasserstein_distance(test.prop(name), gen.props[:, j]))
                     if len(valid) else float("nan"))
    out = {k: out[k] for k in MOSES_KEYS if k in out}
    if extra:
        gen_kl = kl.kl_descriptors(kl.kl_sample(valid, seed), n_jobs=n_jobs)
        out["KL"] = kl.kl_score(test.kl, gen_kl)
        out["FCD_score/Test"] = math.exp(-0.2 * out["FCD/Test"])
        out["n"] = len(smiles)
    out["caveats"] = _caveats(out, len(valid), smiles, gen.canon)
    return out
