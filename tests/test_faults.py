"""Fault injection: refused options over existing files, Ctrl-C, SIGKILL, a dead worker, a giant molecule.

Each test runs the real command line in a subprocess (with a timeout, so a hang fails instead of
blocking) and checks what a chemist's overnight job would need: existing files untouched, whole
chunks kept, one clear line, and a --resume that gives the file an uninterrupted run gives.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

SMALL = "smiles-gpt-moses-small"
EARLIER = "smiles,valid\nCCO,True\n"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def molgen(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "molgen.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def cli(*args: str):
    """The command line in this process (no start-up cost): ``(exit code, output on one line)``."""
    from typer.testing import CliRunner

    from molgen.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "molgen.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def wait_for_chunks(out: Path, k: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    """Until the run's record lists ``k`` chunks (the run is then well under way)."""
    record = out.with_name(out.name + ".partial") / "_run.json"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        try:
            if len(json.loads(record.read_text())["chunks"]) >= k:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no {k} chunks within {timeout} s")


GENERATE = ["generate", "-m", SMALL, "--seed", "3", "--batch-size", "64", "--chunk-size", "128", "--workers", "1"]
REFUSED = [
    (["-m", SMALL, "--precision", "fp16"], "precision must be one of"),
    (["-m", "graph-vae-moses", "--prior", "uniform"], "prior must be"),
    (["-m", SMALL, "--prior", "standard"], "no latent prior"),
    (["-m", SMALL, "--workers", "0"], "workers must be"),
    (["-m", SMALL, "--workers", "-3"], "workers must be"),
    (["-m", SMALL, "--workers", "many"], "--workers takes"),
    (["-m", SMALL, "--temperature", "-1"], "temperature must be"),
    (["-m", SMALL, "-n", "0"], "number of molecules"),
    (["-m", SMALL, "--batch-size", "0"], "batch_size must be"),
    (["-m", SMALL, "--device", "gpu"], "unknown device 'gpu'"),
    (["-m", "graph-vae-moses", "--max-ring", "2"], "max_ring"),
    (["-m", "no-such-model"], "no checkpoint folder or shipped model"),
]


@pytest.mark.parametrize(("args", "message"), REFUSED, ids=[" ".join(a[2:]) or a[1] for a, _ in REFUSED])
def test_a_refused_generate_leaves_an_existing_file_as_it_was(tmp_path, args, message):
    out = tmp_path / "earlier.csv"
    out.write_text(EARLIER)
    code, output = cli("generate", "-n", "5", "-o", str(out), *args)
    assert code == 2, output
    assert message in output and "Traceback" not in output
    assert out.read_text() == EARLIER
    assert not out.with_name(out.name + ".partial").exists()


def test_cuda_on_a_cpu_build_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "earlier.csv"
    out.write_text(EARLIER)
    code, output = cli("generate", "-m", SMALL, "-n", "5", "-o", str(out), "--device", "cuda")
    assert code == 2 and "Traceback" not in output
    assert "no CUDA" in output and "available here: cpu" in output
    assert out.read_text() == EARLIER


def test_score_refuses_to_overwrite_its_input(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("smiles,logp\nCCO,-0.31\n")
    code, output = cli("score", str(src), "-o", str(src))
    assert code == 2 and "is the input file" in output
    assert src.read_text() == "smiles,logp\nCCO,-0.31\n"


def test_scored_sdf_keeps_the_inputs_3d_molblocks(tmp_path):
    from molgen.io import read_table, sdf_molblocks

    src = Path(__file__).parents[1] / "molgen" / "_data" / "cmet_ligands.sdf"
    out = tmp_path / "scored.sdf"
    code, output = cli("score", str(src), "-o", str(out))
    assert code == 0, output
    assert sdf_molblocks(out) == sdf_molblocks(src)  # coordinates, hydrogens and titles as they were
    assert "3D" in sdf_molblocks(out)[0].splitlines()[1]
    back = read_table(out)
    assert back.smiles.tolist() == read_table(src).smiles.tolist()
    assert back["qed"].between(0, 1).all()


def test_ctrl_c_keeps_whole_chunks_says_so_and_resume_gives_the_uninterrupted_file(tmp_path):
    whole, cut = tmp_path / "whole.csv", tmp_path / "cut.csv"
    assert molgen(*GENERATE, "-n", "600", "-o", str(whole)).returncode == 0
    cut.write_text(EARLIER)  # an earlier file of that name stays until the run completes
    proc = start(*GENERATE, "-n", "600", "-o", str(cut))
    wait_for_chunks(cut, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    err = " ".join(err.split())
    assert "interrupted:" in err and "rows are kept in" in err and "--resume" in err
    assert "Traceback" not in err
    assert cut.read_text() == EARLIER
    resumed = molgen(*GENERATE, "-n", "600", "-o", str(cut), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "from the interrupted run" in " ".join(resumed.stderr.split())
    assert cut.read_bytes() == whole.read_bytes()
    assert not cut.with_name("cut.csv.partial").exists()


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    out = tmp_path / "t.csv"
    proc = start(*GENERATE, "-n", "600", "-o", str(out))
    wait_for_chunks(out, 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "--resume" in err


def test_a_killed_parquet_run_keeps_readable_chunks_and_resumes(tmp_path):
    whole, cut = tmp_path / "whole.parquet", tmp_path / "cut.parquet"
    assert molgen(*GENERATE, "-n", "600", "-o", str(whole)).returncode == 0
    proc = start(*GENERATE, "-n", "600", "-o", str(cut))
    wait_for_chunks(cut, 3, proc)
    proc.kill()
    proc.communicate(timeout=30)
    kept = pd.read_parquet(cut.with_name("cut.parquet.partial"))  # every chunk file is a complete Parquet file
    assert len(kept) >= 3 * 128
    assert kept.smiles.tolist() == pd.read_parquet(whole).smiles.tolist()[: len(kept)]
    assert not cut.exists()
    assert molgen(*GENERATE, "-n", "600", "-o", str(cut), "--resume").returncode == 0
    pd.testing.assert_frame_equal(pd.read_parquet(cut), pd.read_parquet(whole))


def test_resume_refuses_a_run_with_other_settings(tmp_path):
    out = tmp_path / "r.csv"
    proc = start(*GENERATE, "-n", "600", "-o", str(out))
    wait_for_chunks(out, 1, proc)
    proc.kill()
    proc.communicate(timeout=30)
    again = molgen(*GENERATE, "-n", "600", "-o", str(out))  # without --resume: the kept rows are not thrown away
    assert again.returncode == 2 and "--resume" in again.stderr
    other = molgen(*GENERATE[:-2], "-n", "600", "-o", str(out), "--resume", "--seed", "4")
    assert other.returncode == 2 and "seed" in other.stderr


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sampling workers fork on Linux only")
def test_a_killed_sampling_worker_ends_generate_with_the_cause(tmp_path):
    out = tmp_path / "w.csv"
    out.write_text(EARLIER)
    proc = start("generate", "-m", SMALL, "-n", "200000", "--batch-size", "256", "--chunk-size", "512",
                 "--workers", "2", "-o", str(out))
    wait_for_chunks(out, 1, proc)
    end, killed = time.monotonic() + 60, 0
    while proc.poll() is None and time.monotonic() < end:  # each chunk has its own pool: kill until one dies mid-chunk
        for pid in _children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # as the out-of-memory killer would
                killed += 1
        time.sleep(0.1)
    assert killed, "no worker processes seen"
    _, err = proc.communicate(timeout=60)  # the old pool waited here for ever
    err = " ".join(err.split())
    assert proc.returncode == 2, err
    assert "SIGKILL" in err and "out-of-memory" in err and "--workers" in err and "--resume" in err
    assert out.read_text() == EARLIER


def test_unique_that_cannot_be_met_stops_with_a_reason(tmp_path):
    out = tmp_path / "u.csv"
    code, output = cli("generate", "-m", SMALL, "-n", "50", "--unique", "--temperature", "0", "-o", str(out))
    assert code == 2
    assert "only 1 of 50 rows" in output and "greedy decoding" in output
    assert not out.exists()


def test_api_and_cli_refuse_the_same_sampling_options():
    import molgen as mg
    from molgen.errors import InputError

    gpt = mg.load_pretrained(SMALL, device="cpu")
    for kwargs in ({"n": -1}, {"n": 0}, {"n": 5, "temperature": -1}, {"n": 5, "batch_size": 0},
                   {"n": 5, "workers": 0}, {"n": 5, "precision": "fp16"}):
        with pytest.raises(InputError):
            mg.sample(gpt, **kwargs)


def test_gzipped_output_is_accepted(tmp_path):
    out = tmp_path / "g.csv.gz"
    assert cli(*GENERATE, "-n", "100", "-o", str(out))[0] == 0
    back = pd.read_csv(out)
    assert len(back) == 100 and list(back.columns) == ["smiles", "valid", "log_likelihood"]
