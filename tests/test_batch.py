"""Batch generation: sampling, scoring and a score threshold in one resumable stream; shards; Dask.

The checks a large overnight run needs: the scored file equals sampling then scoring, a SIGKILL
and --resume give the uninterrupted file, shards joined give the unsharded file row for row, and
a resume with another objective is refused.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_faults import cli, molgen, start, wait_for_chunks  # the same subprocess helpers

import molgen as mg
from molgen import batch
from molgen.errors import ConfigError, InputError
from molgen.guide import Objective
from molgen.io import read_table
from molgen.sample import shard_range

torch.set_num_threads(1)
SMALL = "smiles-gpt-moses-small"
ROOT = Path(__file__).resolve().parents[1]
OBJECTIVE = ROOT / "scripts/configs/objective_druglike.toml"
RUN = dict(seed=3, batch_size=64, chunk_size=128, workers=1, progress=False)


@pytest.fixture(scope="module")
def model():
    return mg.load_pretrained(SMALL, device="cpu")


def test_scored_stream_equals_sampling_then_scoring_and_drops_only_low_scores(model, tmp_path):
    out = tmp_path / "scored.parquet"
    summary = batch.generate(model, 300, out, score=True, objective=OBJECTIVE, min_score=0.5, **RUN)
    got = pd.read_parquet(out)
    drawn = mg.sample(model, 300, seed=3, batch_size=64, workers=1)
    scored = Objective.from_toml(OBJECTIVE)(drawn["smiles"].tolist())
    kept = scored["score"].to_numpy() >= 0.5
    assert 0 < kept.sum() < 300  # the threshold bites on real samples
    assert got["smiles"].tolist() == drawn["smiles"][kept].tolist()
    np.testing.assert_allclose(got["score"], scored["score"][kept])
    np.testing.assert_allclose(got["score_qed"], scored["qed"][kept])
    # the RDKit columns, computed in the objective's pass over each molecule, equal mg.score's
    alone = mg.score(got["smiles"].tolist())
    cols = list(mg.score.COLUMNS)
    pd.testing.assert_frame_equal(got[cols].reset_index(drop=True), alone[cols], check_exact=False, check_dtype=False)
    assert summary["below_min_score"] == 300 - kept.sum() and summary["written"] == kept.sum()
    assert (got["score"] >= 0.5).all() and got["valid"].all()
    assert list(got.columns[:3]) == ["smiles", "valid", "log_likelihood"]
    assert set(mg.score.COLUMNS) <= set(got.columns)
    assert set(batch.objective_columns(Objective.from_toml(OBJECTIVE)).values()) <= set(got.columns)


@pytest.mark.parametrize("suffix", [".parquet", ".csv.gz"])
def test_shards_joined_equal_the_single_run(model, tmp_path, suffix):
    kw = dict(objective=OBJECTIVE, min_score=0.4, **RUN)
    whole = tmp_path / f"whole{suffix}"
    batch.generate(model, 500, whole, **kw)  # 8 batches: the last short (52 rows)
    joined = tmp_path / f"joined{suffix}"
    written = [batch.generate(model, 500, batch.shard_path(joined, k, 3), shard=f"{k}/3", **kw) for k in (1, 2, 3)]
    assert [s["first_batch"] for s in written] == [0, 2, 5] and sum(s["rows"] for s in written) == 500
    batch.join(joined, 3)
    a, b = read_table(whole), read_table(joined)
    assert len(a) == sum(s["written"] for s in written)
    pd.testing.assert_frame_equal(a, b)


def test_cli_shard_writes_its_batches_and_says_which(model, tmp_path):
    out = tmp_path / "s.csv"
    code, line = cli("generate", "-m", SMALL, "-n", "100", "-o", str(out), "--seed", "3", "--batch-size", "64",
                     "--workers", "1", "--shard", "2/2", "--score")  # fmt: skip
    assert code == 0, line
    assert "shard 2/2: batches from 1" in line
    got = read_table(out)
    assert got["smiles"].tolist() == mg.sample(model, 100, seed=3, batch_size=64, workers=1)["smiles"][64:].tolist()
    assert "qed" in got.columns and "score" not in got.columns


def test_shard_ranges_cover_the_batches_once():
    for n, size, parts in [(500, 64, 3), (1024, 1024, 1), (10_000, 1000, 7), (65, 64, 2)]:
        spans = [shard_range(n, size, k, parts) for k in range(1, parts + 1)]
        assert sum(rows for _, rows in spans) == n
        starts = [first * size for first, _ in spans]
        assert starts == list(np.cumsum([0] + [rows for _, rows in spans[:-1]]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(shard="1/2", unique=True), "cannot be combined with --unique"),
    (dict(shard="1/2", valid_only=True), "cannot be combined with --unique or --valid-only"),
    (dict(shard="3/2"), "1 <= K <= N"),
    (dict(shard="a/b"), "--shard takes K/N"),
    (dict(shard="1/9"), "only 5 batches"),
    (dict(min_score=0.5), "give --objective"),
    (dict(objective=OBJECTIVE, min_score=2.0), "in [0, 1]"),
    (dict(properties=["qed", "colour"]), "unknown properties"),
])  # fmt: skip
def test_bad_options_are_refused_before_any_file(model, tmp_path, kwargs, message):
    out = tmp_path / "x.csv"
    out.write_text("smiles,valid\nCCO,True\n")
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        batch.generate(model, 300, out, **{**RUN, **kwargs})
    assert out.read_text() == "smiles,valid\nCCO,True\n"
    assert not out.with_name("x.csv.partial").exists()


def test_a_broken_objective_is_one_config_error(model, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[component]]\nkind = "qedd"\n')
    with pytest.raises(ConfigError, match="qedd"):
        batch.generate(model, 10, tmp_path / "o.csv", objective=bad, **RUN)


def test_join_names_missing_shards(tmp_path):
    with pytest.raises(InputError, match="2 of 2 shard files are missing"):
        batch.join(tmp_path / "out.parquet", 2)


GENERATE = ["generate", "-m", SMALL, "--seed", "3", "--batch-size", "64", "--chunk-size", "128", "--workers", "1",
            "-n", "900", "--score", "--min-score", "0.5"]


def test_a_killed_scored_run_resumes_to_the_uninterrupted_file_and_refuses_another_objective(tmp_path):
    obj = tmp_path / "objective.toml"
    shutil.copy(OBJECTIVE, obj)
    whole, cut = tmp_path / "whole.parquet", tmp_path / "cut.parquet"
    done = molgen(*GENERATE, "--objective", str(obj), "-o", str(whole))
    assert done.returncode == 0, done.stderr
    line = " ".join(done.stderr.split())
    assert "below --min-score 0.5 dropped" in line
    proc = start(*GENERATE, "--objective", str(obj), "-o", str(cut))
    wait_for_chunks(cut, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert not cut.exists() and cut.with_name("cut.parquet.partial").exists()
    obj.write_text(obj.read_text().replace("weight = 2.0", "weight = 3.0"))  # another objective
    other = molgen(*GENERATE, "--objective", str(obj), "-o", str(cut), "--resume")
    assert other.returncode == 2 and "objective_sha256" in other.stderr
    shutil.copy(OBJECTIVE, obj)
    resumed = molgen(*GENERATE, "--objective", str(obj), "-o", str(cut), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "from the interrupted run" in " ".join(resumed.stderr.split())
    pd.testing.assert_frame_equal(pd.read_parquet(cut), pd.read_parquet(whole))
    assert not cut.with_name("cut.parquet.partial").exists()


@pytest.mark.slow
def test_batch_dask_runs_the_shards_on_a_local_cluster(tmp_path, model):
    pytest.importorskip("distributed")
    single, joined = tmp_path / "single.parquet", tmp_path / "joined.parquet"
    batch.generate(model, 400, single, objective=OBJECTIVE, min_score=0.4, **RUN)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/batch_dask.py"), "-m", SMALL, "-n", "400", "-o", str(joined),
                           "--shards", "3", "--workers", "2", "--seed", "3", "--batch-size", "64", "--chunk-size", "128",
                           "--objective", str(OBJECTIVE), "--min-score", "0.4"],  # fmt: skip
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(joined), pd.read_parquet(single))
    assert "3 shards" in proc.stdout
