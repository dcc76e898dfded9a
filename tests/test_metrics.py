"""molgen.metrics: MOSES definitions on real molecules, sanity against MOSES's published rows, traps.

The MOSES-reference tests need the whole-set statistics of MOSES test/test_scaffolds and the
canonical train set; they are computed once per machine and cached (``molgen.metrics.reference``),
so a cold cache makes the first run long (see the README for the time).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.spatial.distance
import torch
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

import molgen as mg
from molgen.chem import randomize_smiles
from molgen.errors import InputError
from molgen.metrics import EXTRA_KEYS, MOSES_KEYS, fcd, similarity
from molgen.metrics.features import PROPS, features
from molgen.metrics.reference import (
    moses_reference,
    moses_train_hashes,
    official_moses_stats,
    reference_stats,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def moses_test():
    return mg.datasets.moses_smiles("test")


@pytest.fixture(scope="module")
def small_ref(moses_test):
    rng = np.random.default_rng(1)
    return [moses_test[i] for i in rng.choice(len(moses_test), 600, replace=False)]


@pytest.fixture(scope="module")
def tmp_cache(tmp_path_factory):
    """A private cache for the small list references: computed once for this module's tests."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOLGEN_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def moses_stats():
    """Whole-set MOSES reference statistics (cached on disk across runs)."""
    return {"test": moses_reference("test"), "test_scaffolds": moses_reference("test_scaffolds"),
            "train": moses_train_hashes()}


def _sample(smiles, n, seed):
    return [smiles[i] for i in np.random.default_rng(seed).choice(len(smiles), n, replace=False)]


# --- MOSES sanity (slow: two 10,000-molecule evaluations) ------------------------------------------


@pytest.mark.slow
def test_moses_test_sample_against_moses(moses_stats, moses_test):
    result = mg.metrics.evaluate(_sample(moses_test, 10_000, seed=0))
    assert list(result) == [*MOSES_KEYS, *EXTRA_KEYS, "caveats"]
    assert result["caveats"] == []  # 10,000 valid molecules: nothing undefined or too small
    assert result["valid"] == 1.0 and result["n"] == 10_000
    assert result["Novelty"] > 0.999  # test molecules are not in train (measured 1.0)
    # a perfect generator's FCD at n=10,000 is about 0.12 (small-sample bias); measured 0.118
    assert result["FCD/Test"] < 0.2
    assert result["FCD/TestSF"] > 0.4  # the scaffold split really is different (MOSES Train row: 0.48)
    assert result["SNN/Test"] > 0.999  # each molecule is its own nearest neighbour
    # count cosines of a 10k sample against 176k molecules: measured Frag 0.9998, Scaf 0.880 (scaffold
    # counts are sparse, so Scaf of even a perfect sample grows with n)
    assert result["Frag/Test"] > 0.999 and result["Scaf/Test"] > 0.85
    assert max(result[k] for k in ("logP", "SA", "QED", "weight")) < 1.0  # weight is in daltons
    assert result["KL"] > 0.95


@pytest.mark.slow
def test_train_sample_matches_moses_train_row(moses_stats):
    """MOSES's "Train" row: FCD 0.008, SNN 0.642, Frag 1.000, Scaf 0.991, IntDiv 0.857, IntDiv2 0.851.

    FCD and Scaf depend on the sample size (MOSES's FCD 0.008 and Scaf 0.991 need far more than
    10,000 molecules: at 30,000 we measure FCD 0.048); SNN, Frag and IntDiv are means that do not.
    """
    train = _sample(mg.datasets.moses_smiles("train"), 10_000, seed=0)
    result = mg.metrics.evaluate(train, extra=False)
    assert result["Novelty"] == 0.0  # drawn from train, canonicalised on both sides
    assert result["FCD/Test"] < 0.2  # measured 0.134 at n=10,000 (a test sample gets 0.118)
    assert result["SNN/Test"] == pytest.approx(0.642, abs=0.01)  # measured 0.6426
    assert result["Frag/Test"] == pytest.approx(1.0, abs=0.002)  # measured 0.9997
    assert result["Scaf/Test"] == pytest.approx(0.888, abs=0.02)  # measured 0.888 (a test sample: 0.880)
    assert result["IntDiv"] == pytest.approx(0.857, abs=0.005)  # measured 0.8566
    assert result["IntDiv2"] == pytest.approx(0.851, abs=0.005)  # measured 0.8504
    assert result["Filters"] == 1.0  # MOSES built its data set with these filters


@pytest.mark.parametrize("split", ["test", "test_scaffolds"])
def test_our_features_match_the_ones_moses_ships(split):
    """Today's RDKit pipeline against the statistics MOSES computed for its tables, row by row.

    moses_reference takes the whole-split statistics from MOSES's file; this shows that what molgen
    computes for generated molecules is the same quantity, on 2,000 molecules of the split.
    """
    smiles, official = mg.datasets.moses_smiles(split), official_moses_stats(split)
    assert len(official["logP"]["values"]) == len(smiles)
    rows = np.sort(np.random.default_rng(3).choice(len(smiles), 2_000, replace=False))
    ours = features([smiles[i] for i in rows], generated=False, n_jobs=1)
    assert len(ours.valid_smiles) == len(rows)
    # today's RDKit perceives a few fused polyaromatic rings differently than 2019's (6 of 176,074
    # test molecules): fingerprints and properties agree for all others
    theirs = np.packbits(official["SNN"]["fps"][rows].astype(np.uint8), axis=1)
    assert (ours.packed != theirs).any(axis=1).sum() <= 2
    for j, name in enumerate(PROPS):
        differ = ~np.isclose(ours.props[:, j], np.asarray(official[name]["values"])[rows], rtol=0, atol=1e-9)
        assert differ.sum() <= 2, name
    # every fragment and scaffold we find is one MOSES counted (at least as often)
    for found, counted in ((ours.frags, official["Frag"]["frag"]), (ours.scafs, official["Scaf"]["scaf"])):
        missing = sum(n for key, n in found.items() if counted.get(key, 0) < n)
        assert missing <= 2


@pytest.mark.slow
@pytest.mark.parametrize("split", ["test", "test_scaffolds"])
def test_moses_reference_is_the_published_one(moses_stats, split):
    ours, official = moses_stats[split], official_moses_stats(split)
    assert ours.n == len(official["logP"]["values"]) == len(mg.datasets.moses_smiles(split))
    np.testing.assert_array_equal(ours.fcd_mu, official["FCD"]["mu"])
    np.testing.assert_array_equal(ours.fcd_sigma, official["FCD"]["sigma"])
    assert ours.frags == dict(official["Frag"]["frag"]) and ours.scafs == dict(official["Scaf"]["scaf"])
    assert np.all(np.diff(ours.fp_counts) >= 0)  # sorted by popcount, as SNN's pruning needs
    assert ours.fp_counts.sum() == official["SNN"]["fps"].sum()
    np.testing.assert_array_equal(np.sort(ours.prop("QED")), np.sort(official["QED"]["values"]))
    assert ours.kl.shape == (10_000, 10) and np.isfinite(ours.kl).all()


# --- definitions on small sets (fast) --------------------------------------------------------------


def test_invalid_strings_are_counted_not_dropped(small_ref, tmp_cache):
    gen = small_ref[:300] + ["not a smiles", "C1CC", "", "c1cccc1"] * 25  # 100 invalid of 400
    result = mg.metrics.evaluate(gen, reference=small_ref, n_jobs=1, extra=True)
    assert result["valid"] == pytest.approx(300 / 400)
    assert result["n"] == 400
    assert "FCD/TestSF" not in result and "Novelty" not in result  # list reference, no train given
    assert result["Filters"] == 1.0  # computed on the 300 valid ones only
    nothing = mg.metrics.evaluate(["xx", "C1CC"], reference=small_ref, n_jobs=1)
    assert nothing["valid"] == 0.0 and nothing["n"] == 2 and math.isnan(nothing["FCD/Test"])


def test_identical_sets(small_ref, tmp_cache):
    result = mg.metrics.evaluate(small_ref, reference=small_ref, n_jobs=1)
    assert result["FCD/Test"] == pytest.approx(0.0, abs=1e-6)
    assert result["FCD_score/Test"] == pytest.approx(1.0, abs=1e-6)
    assert result["SNN/Test"] == 1.0 and result["Frag/Test"] == pytest.approx(1.0)
    assert result["Scaf/Test"] == pytest.approx(1.0)
    assert all(result[k] == pytest.approx(0.0, abs=1e-12) for k in ("logP", "SA", "QED", "weight"))
    assert result["KL"] == pytest.approx(1.0, abs=1e-6)


def test_novelty_canonicalises_both_sides(small_ref, tmp_cache):
    gen = small_ref[:200]
    train_other_spelling = [randomize_smiles(s, seed=3) for s in gen]
    assert sum(a != b for a, b in zip(gen, train_other_spelling, strict=True)) > 150
    result = mg.metrics.evaluate(gen, reference=small_ref, train=train_other_spelling, n_jobs=1, extra=False)
    assert result["Novelty"] == 0.0
    half = mg.metrics.evaluate(gen, reference=small_ref, train=train_other_spelling[:100], n_jobs=1, extra=False)
    assert half["Novelty"] == pytest.approx(0.5)


def test_uniqueness_over_first_k_valid():
    canon = ["CCO"] * 500 + ["c1ccccc1"] + [f"C{'C' * i}O" for i in range(600)]
    assert mg.metrics.fraction_unique(canon, 1000) == pytest.approx(500 / 1000)  # CCO, benzene, 498 chains
    assert mg.metrics.fraction_unique(canon, 10000) == pytest.approx(601 / 1101)  # evaluate's caveats say so


def test_n_takes_a_seeded_sample(small_ref, tmp_cache):
    a = mg.metrics.evaluate(small_ref, reference=small_ref, n=300, seed=5, n_jobs=1, extra=True)
    b = mg.metrics.evaluate(small_ref, reference=small_ref, n=300, seed=5, n_jobs=1, extra=True)
    assert a["n"] == 300 and a == b


def test_reference_statistics_are_cached_by_content(small_ref, tmp_path, monkeypatch):
    monkeypatch.setenv("MOLGEN_CACHE", str(tmp_path))
    stats = reference_stats(small_ref[:100], n_jobs=1)
    files = list((tmp_path / "metrics").glob("reference-*.npz"))
    assert len(files) == 1 and stats.n == 100
    again = reference_stats(small_ref[:100], n_jobs=1)
    np.testing.assert_array_equal(again.fcd_sigma, stats.fcd_sigma)
    reference_stats(small_ref[1:101], n_jobs=1)  # other content, other key
    assert len(list((tmp_path / "metrics").glob("reference-*.npz"))) == 2


def test_concurrent_builds_compute_once(small_ref, tmp_path, monkeypatch):
    """Two evaluations started together (threads here, processes in practice) build the cache once."""
    import threading

    from molgen.metrics import reference

    monkeypatch.setenv("MOLGEN_CACHE", str(tmp_path))
    calls = []
    real = reference.compute_reference
    monkeypatch.setattr(reference, "compute_reference", lambda *a, **k: calls.append(1) or real(*a, **k))
    results = []
    threads = [threading.Thread(target=lambda: results.append(reference_stats(small_ref[:60], n_jobs=1)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 2
    np.testing.assert_array_equal(results[0].fps, results[1].fps)
    assert not list((tmp_path / "metrics").glob("*.tmp*"))


def test_bad_input_is_reported():
    with pytest.raises(InputError, match="empty"):
        mg.metrics.evaluate([])
    with pytest.raises(InputError, match="unknown reference"):
        mg.metrics.evaluate(["CCO"], reference="zinc")


# --- building blocks against the reference implementations -----------------------------------------


def test_cosine_of_large_counts_is_computed_in_float64():
    ref, gen = {"a": 10**6, "b": 1}, {"a": 10**6, "c": 1}
    exact = 10**12 / (10**12 + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # the trap: SciPy's cosine on integer vectors overflows (10^24 > int64) and clips to 1.0
        scipy_value = 1 - scipy.spatial.distance.cosine(np.array([10**6, 1, 0]), np.array([10**6, 0, 1]))
    assert scipy_value == 1.0
    assert similarity.cosine_similarity(ref, gen) == pytest.approx(exact, rel=1e-12)
    assert similarity.cosine_similarity(ref, gen) < 1.0
    assert math.isnan(similarity.cosine_similarity({}, gen))


def _dense_tanimoto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MOSES ``average_agg_tanimoto``'s matrix: float matmul, 0/0 -> 1."""
    a, b = torch.tensor(a).double(), torch.tensor(b).double()
    inter = a @ b.T
    jac = inter / (a.sum(1, keepdim=True) + b.sum(1)[None] - inter)
    jac[torch.isnan(jac)] = 1
    return jac.numpy()


def test_snn_and_intdiv_equal_moses_dense_formulas(small_ref):
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)

    def bits(smiles):
        return [np.array(list(gen.GetFingerprint(Chem.MolFromSmiles(s)).GetOnBits()), dtype=np.int64) for s in smiles]

    g = similarity.pack(bits(small_ref[:300]) + [np.array([], dtype=np.int64)])  # plus an empty fingerprint
    r = similarity.pack(bits(small_ref[300:600]) + [np.array([], dtype=np.int64)])
    ref_sorted, counts = similarity.sorted_by_popcount(r)
    dense = _dense_tanimoto(np.unpackbits(g, axis=1), np.unpackbits(r, axis=1))
    assert similarity.snn(g, ref_sorted, counts) == pytest.approx(dense.max(1).mean(), abs=1e-6)
    self_sim = _dense_tanimoto(np.unpackbits(g, axis=1), np.unpackbits(g, axis=1))
    intdiv, intdiv2 = similarity.internal_diversity(g)
    assert intdiv == pytest.approx(1 - self_sim.mean(), abs=1e-6)
    assert intdiv2 == pytest.approx(1 - np.sqrt((self_sim**2).mean(1)).mean(), abs=1e-6)


def test_chemnet_activations_equal_fcd_torch(small_ref):
    from fcd_torch import FCD

    smiles = small_ref[:60] + ["CC.O", "[Si](C)(C)Cl", "BrCCBr", "C" * 400, "[Li]C", "c1ccsc1I"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fcd_torch's np.row_stack, sqrtm(disp=)
        expected = FCD(canonize=False, n_jobs=1).get_predictions(smiles)
    np.testing.assert_array_equal(fcd.activations(smiles), expected)
