"""Reference statistics for the distribution metrics, computed once per data set and cached.

A reference (MOSES test, test_scaffolds, or any list of SMILES) is summarised by everything the
metrics compare a generated set with: ChemNet mean/covariance (FCD), Morgan bits sorted by
popcount (SNN), fragment and scaffold counts (Frag, Scaf), logP/SA/QED/weight values
(Wasserstein) and GuacaMol's KL descriptors of a 10,000-molecule sample. Statistics always come
from the whole set (MOSES's test.csv.gz is not in random order, so a head slice is biased).

The MOSES splits are summarised from the statistics MOSES ships beside its data (ChemNet moments,
fingerprints, fragment and scaffold counts, property values of every molecule; see
:func:`moses_reference`), so the distribution metrics compare with exactly the reference of the
published MOSES tables and a cold start takes seconds. Any other reference is computed here.

The cache lives in ``molgen.cache.cache_dir("metrics")`` as plain ``.npz``/``.npy`` files (no
pickles), named by the sha256 of the data (the file for MOSES, the strings for a list) and a
format version per kind of file, so changed data or a changed definition never meets stale
statistics, and a change to one kind does not rebuild the others.
Training sets for novelty are cached as sorted 64-bit hashes of canonical SMILES.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from molgen.cache import cache_dir, sha256_file, sha256_strings
from molgen.files import atomic_path
from molgen.metrics import fcd, kl
from molgen.metrics.features import PROPS, features, smiles_hashes
from molgen.metrics.similarity import N_BITS, sorted_by_popcount
from molgen.parallel import progress_bar

__all__ = ["ReferenceStats", "reference_stats", "moses_reference", "official_reference", "train_hashes",
           "moses_train_hashes", "prepare_moses"]

log = logging.getLogger(__name__)
# one format version per kind of cache file: bump a kind's version when its definition changes,
# and only the old files of that kind are ignored
VERSIONS = {"reference": 2, "moses": 1, "train": 2}


@dataclass
class ReferenceStats:
    """Everything the metrics need from one reference set (arrays only, so it saves as .npz)."""

    n: int
    fcd_mu: np.ndarray  # (512,)
    fcd_sigma: np.ndarray  # (512, 512)
    fps: np.ndarray  # (N, 128) uint8 packed Morgan bits, sorted by popcount
    fp_counts: np.ndarray  # (N,) popcounts, ascending
    frag_keys: np.ndarray
    frag_counts: np.ndarray
    scaf_keys: np.ndarray
    scaf_counts: np.ndarray
    props: np.ndarray  # (N, 4): logP, SA, QED, weight
    kl: np.ndarray  # (<=10000, 10) GuacaMol KL descriptors

    @property
    def frags(self) -> dict[str, int]:
        return dict(zip(self.frag_keys.tolist(), self.frag_counts.tolist(), strict=True))

    @property
    def scafs(self) -> dict[str, int]:
        return dict(zip(self.scaf_keys.tolist(), self.scaf_counts.tolist(), strict=True))

    def prop(self, name: str) -> np.ndarray:
        return self.props[:, PROPS.index(name)]

    def save(self, path: Path) -> None:
        np.savez(path, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: Path) -> ReferenceStats:
        with np.load(path, allow_pickle=False) as data:
            return cls(**{f.name: data[f.name] for f in fields(cls)})


def _counts(counter: Counter) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(counter)
    return np.array(keys, dtype=str), np.array([counter[k] for k in keys], dtype=np.int64)


def compute_reference(smiles: list[str], n_jobs: int = 2, progress: bool = False, seed: int = 0,
                      label: str = "reference", device: str | None = "auto",
                      fcd_stats: tuple[np.ndarray, np.ndarray] | None = None) -> ReferenceStats:
    """Statistics of a whole reference set (invalid SMILES are skipped).

    ``fcd_stats`` (ChemNet mean, covariance) skips the ChemNet pass when they are known already.
    """
    feats = features(smiles, generated=False, n_jobs=n_jobs, progress=progress,
                     description=f"{label}: molecules")
    valid = feats.valid_smiles
    if len(valid) < 2:
        raise ValueError(f"the {label} set has {len(valid)} valid molecules; it needs at least 2")
    if fcd_stats is None:
        with progress_bar(progress, f"{label}: ChemNet", len(valid)) as advance:
            acts = fcd.activations(valid, threads=n_jobs, progress=advance, device=device)
        fcd_stats = fcd.fcd_stats(acts)
    return _assemble(fcd_stats, feats.packed, feats.frags, feats.scafs, feats.props, valid, n_jobs, seed)


def _assemble(fcd_stats: tuple[np.ndarray, np.ndarray], packed: np.ndarray, frags, scafs, props: np.ndarray,
              smiles: list[str], n_jobs: int, seed: int) -> ReferenceStats:
    """:class:`ReferenceStats` from per-molecule features; the KL descriptors of a seeded sample of ``smiles``."""
    fps, fp_counts = sorted_by_popcount(packed)
    frag_keys, frag_counts = _counts(frags)
    scaf_keys, scaf_counts = _counts(scafs)
    kl_desc = kl.kl_descriptors(kl.kl_sample(smiles, seed), n_jobs=n_jobs)
    return ReferenceStats(len(fps), *fcd_stats, fps, fp_counts, frag_keys, frag_counts,
                          scaf_keys, scaf_counts, props, kl_desc)


def _cache_file(kind: str, key: str, suffix: str) -> Path:
    return cache_dir("metrics") / f"{kind}-{key[:24]}-v{VERSIONS[kind]}{suffix}"


@contextlib.contextmanager
def _file_lock(path: Path):
    """Exclusive lock on ``path`` where the OS offers ``flock`` (elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent builds just do the work twice
        yield
        return
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cached(path: Path, build: Callable, save: Callable, load: Callable):
    """``load(path)`` if the cache file exists; else build it, save it atomically and return it.

    The lock makes concurrent processes (parallel test workers, two evaluations started together)
    build a file once: the others wait, then load it. The write goes to a private temporary name
    first, so a crash or a reader never sees half a file.
    """
    if path.exists():
        return load(path)
    with _file_lock(path.with_name(path.name + ".lock")):
        if path.exists():
            return load(path)
        start = time.perf_counter()
        value = build()
        with atomic_path(path) as tmp:
            save(value, tmp)
        log.info("built %s in %.0f s", path, time.perf_counter() - start)
        return value


def _key_and_loader(smiles, key: str | None):
    """(cache key, zero-argument function giving the SMILES list) for a list or a loader plus key."""
    if key is None:
        smiles = list(smiles() if callable(smiles) else smiles)
        key = sha256_strings(smiles)
    return key, (smiles if callable(smiles) else lambda: list(smiles))


def reference_stats(smiles: list[str] | Callable[[], list[str]], key: str | None = None, n_jobs: int = 2,
                    progress: bool = False, label: str = "reference", device: str | None = "auto",
                    fcd_stats: Callable[[], tuple] | None = None) -> ReferenceStats:
    """Cached statistics of a reference set.

    ``key`` names the cache entry (default: sha256 of the strings); with a key, ``smiles`` may be
    a function that loads the strings, called only when the statistics are not cached yet;
    ``fcd_stats`` likewise gives known ChemNet statistics instead of computing them.
    """
    key, load_smiles = _key_and_loader(smiles, key)
    return _cached(_cache_file("reference", key, ".npz"),
                   lambda: compute_reference(load_smiles(), n_jobs=n_jobs, progress=progress, label=label,
                                             device=device, fcd_stats=fcd_stats() if fcd_stats else None),
                   ReferenceStats.save, ReferenceStats.load)


def moses_reference(split: str, n_jobs: int = 2, progress: bool = False) -> ReferenceStats:
    """Statistics of the whole MOSES ``test`` or ``test_scaffolds`` split, keyed by its file's sha256.

    Everything but the GuacaMol KL descriptors comes from the statistics MOSES published with the
    split (:func:`official_moses_stats`): FCD, SNN, Frag, Scaf and the property distances are then
    measured against exactly the reference of the MOSES tables. Today's RDKit computes the same
    features for all but a handful of molecules (``test_our_features_match_the_ones_moses_ships``
    checks a sample), and a cold start takes seconds instead of RDKit and ChemNet passes over
    176,000 molecules (no ChemNet pass, so no device to choose).
    """
    from molgen.datasets import moses_path

    return _cached(_cache_file("moses", sha256_file(moses_path(split)), ".npz"),
                   lambda: official_reference(split, n_jobs=n_jobs, progress=progress),
                   ReferenceStats.save, ReferenceStats.load)


def official_reference(split: str, n_jobs: int = 2, progress: bool = False, seed: int = 0) -> ReferenceStats:
    """:class:`ReferenceStats` of a MOSES split built from MOSES's own statistics (uncached).

    The KL descriptors (GuacaMol, not part of MOSES's file) are computed from a seeded sample of
    the split, exactly as :func:`compute_reference` does for any other reference.
    """
    from molgen.datasets import moses_smiles

    stats = official_moses_stats(split)
    with progress_bar(progress, f"MOSES {split}: published statistics", 1) as advance:
        bits = np.asarray(stats["SNN"]["fps"])
        if bits.ndim != 2 or bits.shape[1] != N_BITS:
            raise ValueError(f"MOSES {split} statistics: fingerprints of shape {bits.shape}, expected (N, {N_BITS})")
        packed = np.packbits(bits.astype(np.uint8), axis=1)
        del bits
        props = np.column_stack([np.asarray(stats[name]["values"], dtype=np.float64) for name in PROPS])
        fcd_stats = tuple(np.asarray(stats["FCD"][k], dtype=np.float64) for k in ("mu", "sigma"))
        advance(1)
    if len(packed) != len(props):
        raise ValueError(f"MOSES {split} statistics: {len(packed)} fingerprints but {len(props)} property rows")
    return _assemble(fcd_stats, packed, stats["Frag"]["frag"], stats["Scaf"]["scaf"], props, moses_smiles(split),
                     n_jobs, seed)


class _MosesStatsUnpickler(pickle.Unpickler):
    """Reads MOSES's statistics file (a pickled dict of arrays and Counters) and nothing else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype"),
               ("collections", "Counter"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not expected in MOSES statistics")
        return super().find_class(module, name)


def official_moses_stats(split: str) -> dict:
    """The statistics MOSES ships beside its data (``<split>_stats.npz`` in the molsets wheel).

    The file is a pickled dict; it is read with an unpickler that admits only numpy arrays and
    Counters, so it cannot run code. Keys: FCD (mu, sigma), SNN (fps), Frag, Scaf, logP, SA, QED, weight.
    """
    from molgen.datasets import moses_dir

    with zipfile.ZipFile(moses_dir() / f"{split}_stats.npz") as archive:
        buffer = io.BytesIO(archive.read("stats.npy"))
    np.lib.format.read_magic(buffer)
    np.lib.format.read_array_header_1_0(buffer)
    return _MosesStatsUnpickler(buffer).load().item()


def train_hashes(smiles: list[str] | Callable[[], list[str]], key: str | None = None, n_jobs: int = 2,
                 progress: bool = False) -> np.ndarray:
    """Sorted 64-bit hashes of a training set's canonical SMILES, cached like :func:`reference_stats`."""
    key, load_smiles = _key_and_loader(smiles, key)
    return _cached(_cache_file("train", key, ".npy"),
                   lambda: smiles_hashes(load_smiles(), n_jobs=n_jobs, progress=progress,
                                         description="train: canonical"),
                   lambda value, path: np.save(path, value), lambda path: np.load(path, allow_pickle=False))


def moses_train_hashes(n_jobs: int = 2, progress: bool = False) -> np.ndarray:
    """Canonical-SMILES hashes of MOSES train (1.58M molecules), keyed by the file's sha256."""
    from molgen.datasets import moses_path, moses_smiles

    return train_hashes(lambda: moses_smiles("train"), key=sha256_file(moses_path("train")), n_jobs=n_jobs,
                        progress=progress)


def prepare_moses(n_jobs: int = 2, progress: bool = False) -> None:
    """Build the MOSES caches (train hashes, test and test_scaffolds statistics) if missing.

    This is the one-time cost of MOSES metrics on a machine (about 3 CPU-minutes, nearly all of it
    canonical SMILES of the 1.58M train molecules); afterwards ``evaluate`` only loads files.
    """
    moses_train_hashes(n_jobs, progress)
    for split in ("test", "test_scaffolds"):
        moses_reference(split, n_jobs, progress)
