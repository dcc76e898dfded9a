"""Fault injection: refused options over existing files, Ctrl-C, SIGKILL, a dead worker, a giant molecule,
a user's columns overwritten, bare NaN in JSON, warnings on small sets, a demo table that does not fit.

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
import warnings
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from rdkit import Chem

import molgen as mg
from molgen import chem, demo, io

SMALL = "smiles-gpt-moses-small"
EARLIER = "smiles,valid\nCCO,True\n"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def molgen(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "molgen.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def cli(*args: str):
    """The command line in this process (no start-up cost): ``(exit code, output on one line)``."""
    from typer.testing import CliRunner

    from molgen.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def _default_sigint() -> None:
    # a test suite started in the background (`make test &`) inherits SIGINT ignored, and Python then
    # never turns Ctrl-C into KeyboardInterrupt; the command under test must see it as a terminal would send it
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "molgen.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, preexec_fn=_default_sigint)


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
    # 3,000 rows in chunks of 128: the signal after 2 chunks lands long before the run could end on its own
    whole, cut = tmp_path / "whole.csv", tmp_path / "cut.csv"
    assert molgen(*GENERATE, "-n", "3000", "-o", str(whole)).returncode == 0
    cut.write_text(EARLIER)  # an earlier file of that name stays until the run completes
    proc = start(*GENERATE, "-n", "3000", "-o", str(cut))
    wait_for_chunks(cut, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    err = " ".join(err.split())
    assert "interrupted:" in err and "rows are kept in" in err and "--resume" in err
    assert "Traceback" not in err
    assert cut.read_text() == EARLIER
    resumed = molgen(*GENERATE, "-n", "3000", "-o", str(cut), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "from the interrupted run" in " ".join(resumed.stderr.split())
    assert cut.read_bytes() == whole.read_bytes()
    assert not cut.with_name("cut.csv.partial").exists()


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    out = tmp_path / "t.csv"
    proc = start(*GENERATE, "-n", "3000", "-o", str(out))
    wait_for_chunks(out, 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "--resume" in err


def test_a_killed_parquet_run_keeps_readable_chunks_and_resumes(tmp_path):
    whole, cut = tmp_path / "whole.parquet", tmp_path / "cut.parquet"
    assert molgen(*GENERATE, "-n", "3000", "-o", str(whole)).returncode == 0
    proc = start(*GENERATE, "-n", "3000", "-o", str(cut))
    wait_for_chunks(cut, 3, proc)
    proc.kill()
    proc.communicate(timeout=30)
    kept = pd.read_parquet(cut.with_name("cut.parquet.partial"))  # every chunk file is a complete Parquet file
    assert len(kept) >= 3 * 128
    assert kept.smiles.tolist() == pd.read_parquet(whole).smiles.tolist()[: len(kept)]
    assert not cut.exists()
    assert molgen(*GENERATE, "-n", "3000", "-o", str(cut), "--resume").returncode == 0
    pd.testing.assert_frame_equal(pd.read_parquet(cut), pd.read_parquet(whole))


def test_resume_refuses_a_run_with_other_settings(tmp_path):
    out = tmp_path / "r.csv"
    proc = start(*GENERATE, "-n", "3000", "-o", str(out))
    wait_for_chunks(out, 1, proc)
    proc.kill()
    proc.communicate(timeout=30)
    again = molgen(*GENERATE, "-n", "3000", "-o", str(out))  # without --resume: the kept rows are not thrown away
    assert again.returncode == 2 and "--resume" in again.stderr
    other = molgen(*GENERATE[:-2], "-n", "3000", "-o", str(out), "--resume", "--seed", "4")
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
    # a subprocess on one thread: a second PyTorch thread in this busy test process only spins
    result = molgen("generate", "-m", SMALL, "-n", "50", "--unique", "--temperature", "0", "-o", str(out))
    output = " ".join(result.stderr.split())
    assert result.returncode == 2
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
    assert molgen(*GENERATE, "-n", "100", "-o", str(out)).returncode == 0
    back = pd.read_csv(out)
    assert len(back) == 100 and list(back.columns) == ["smiles", "valid", "log_likelihood"]


# --- scoring and evaluation ---------------------------------------------------------------------

GIANT = "C" * 20_000  # a valid alkane whose SMILES writer overflows RDKit's stack (exit 139)
DRUGS = ["CC(=O)Oc1ccccc1C(=O)O", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)O",
         "COc1ccc2[nH]cc(CCNC(C)=O)c2c1", "CC(C)NCC(O)COc1cccc2ccccc12"]


def one_line(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines at the terminal width


def strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# --- 1. a user's columns are never overwritten ------------------------------------------------------


def test_score_keeps_a_users_columns_of_score_names(real_smiles):
    measured = [-0.31 + i for i in range(len(real_smiles))]  # measured logP, not Crippen's
    user = pd.DataFrame({"id": range(len(real_smiles)), "smiles": real_smiles, "logp": measured,
                         "valid": ["assay ok"] * len(real_smiles), "tpsa": 1.0})
    out = mg.score(user)
    assert out["logp"].tolist() == measured and (out["valid"] == "assay ok").all() and (out["tpsa"] == 1.0).all()
    assert out.attrs["renamed"] == {"valid": "valid_rdkit", "logp": "logp_rdkit", "tpsa": "tpsa_rdkit"}
    assert out["valid_rdkit"].all() and out.loc[0, "logp_rdkit"] == pytest.approx(1.3101, abs=1e-4)  # aspirin
    # the user's columns keep their order after the scores; molgen's sit where the plain names would
    assert [c for c in out.columns if c in user.columns] == ["smiles", "id", "logp", "valid", "tpsa"]
    assert out.columns[1] == "valid_rdkit" and out.columns[4] == "logp_rdkit"
    # a column already called logp_rdkit that is not molgen's is not replaced either
    again = mg.score(out.assign(logp_rdkit=0.0))
    assert again.attrs["renamed"]["logp"] == "logp_rdkit_2" and (again["logp_rdkit"] == 0.0).all()


def test_molgen_s_own_columns_are_replaced_not_renamed(tmp_path, real_smiles):
    # read_table's valid equals score's; a table scored before holds exactly what score computes
    path = tmp_path / "in.csv"
    pd.DataFrame({"smiles": real_smiles + ["C1CC"]}).to_csv(path, index=False)
    first = mg.score(io.read_table(path))
    assert first.attrs["renamed"] == {} and first.columns.tolist()[:2] == ["smiles", "valid"]
    rescored = mg.score(io.read_table(io.write_table(first, tmp_path / "scored.csv")))
    assert rescored.attrs["renamed"] == {} and rescored.columns.tolist() == first.columns.tolist()


def test_molgen_score_cli_keeps_the_users_columns_and_says_so(tmp_path, real_smiles):
    inp, out = tmp_path / "assay.csv", tmp_path / "scored.csv"
    measured = [-0.31] * len(real_smiles)
    pd.DataFrame({"smiles": real_smiles, "logp": measured, "valid": [1, 0] * 10}).to_csv(inp, index=False)
    proc = molgen("score", str(inp), "-o", str(out), "-j", "1")
    assert proc.returncode == 0, proc.stderr
    assert ("your table already has valid, logp: molgen's are written as valid_rdkit, logp_rdkit"
            in one_line(proc.stderr))
    df = pd.read_csv(out)
    assert df["logp"].tolist() == measured and df["valid"].tolist() == [1, 0] * 10
    assert df["valid_rdkit"].all() and df["logp_rdkit"].round(4)[0] == 1.3101


# --- 2. one giant molecule --------------------------------------------------------------------------


def test_a_giant_molecule_does_not_kill_molgen_score(tmp_path):
    moses = mg.datasets.moses_smiles("test")[:599]
    inp, out = tmp_path / "big.csv", tmp_path / "scored.csv"
    pd.DataFrame({"smiles": moses[:300] + [GIANT] + moses[300:]}).to_csv(inp, index=False)
    proc = molgen("score", str(inp), "-o", str(out), "-j", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 of 600 rows invalid (too_large 1)" in one_line(proc.stderr)
    df = pd.read_csv(out)
    assert len(df) == 600 and df["valid"].sum() == 599 and not df["valid"][300]
    assert df["invalid_reason"].tolist().count("too_large") == 1


def test_a_giant_molecule_does_not_kill_molgen_evaluate(tmp_path):
    inp, js = tmp_path / "gen.smi", tmp_path / "metrics.json"
    inp.write_text("\n".join(DRUGS + [GIANT, "C" * 5000]) + "\n")  # too long; too many atoms
    proc = molgen("evaluate", str(inp), "--json", str(js), "-j", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 of 7 rows invalid (too_large 2)" in one_line(proc.stderr)
    metrics = strict_loads(js.read_text())
    assert metrics["valid"] == pytest.approx(5 / 7) and metrics["n"] == 7
    assert any("2 of 7 inputs over molgen's size limits" in c for c in metrics["caveats"])


def test_size_limits_refuse_before_rdkit_and_spare_real_molecules():
    assert chem.to_mol(GIANT) is None and chem.parse_failure(GIANT) == "too_large"  # length
    assert chem.to_mol("C" * 5000) is None and chem.parse_failure("C" * 5000) == "too_large"  # heavy atoms
    big = Chem.MolFromSmiles("C" * 1500)
    assert chem.to_mol(big) is None and chem.to_smiles(big) is None  # a Mol passed in
    valid, reasons = io.validity(["CCO", GIANT, "C1CC"])
    assert reasons == [None, "too_large", "syntax"]
    # a 100-residue peptide (about 800 heavy atoms) and every shipped ChEMBL drug are not refused
    peptide = Chem.MolToSmiles(Chem.MolFromSequence("ACDEFGHIKLMNPQRSTVWY" * 5))
    assert chem.to_mol(peptide).GetNumHeavyAtoms() > 700
    drugs = io.read_table(Path(mg.datasets.DATA_DIR) / "chembl_drugs.csv")
    assert "too_large" not in drugs.attrs["invalid"]


def test_size_limits_are_settable_and_read_from_the_environment():
    pyrene = "c1cc2ccc3cccc4ccc(c1)c2c34"  # 4 rings, 16 heavy atoms
    previous = chem.set_limits(max_rings=3)
    try:
        assert chem.to_mol(pyrene) is None and chem.parse_failure(pyrene) == "too_large"
        assert mg.score([pyrene, "CCO"])["valid"].tolist() == [False, True]
    finally:
        chem.set_limits(previous)
    assert chem.to_mol(pyrene) is not None and chem.LIMITS == previous
    code = "from molgen import chem; print(chem.LIMITS.max_heavy_atoms, chem.to_mol('CCCCCCCCCCC') is None)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**ENV, "MOLGEN_MAX_ATOMS": "10"})
    assert proc.stdout.split() == ["10", "True"], proc.stderr


# --- 3. strict JSON and honest small-n metrics ------------------------------------------------------


def test_evaluate_of_nothing_valid_writes_strict_json(tmp_path):
    inp, js = tmp_path / "bad.smi", tmp_path / "metrics.json"
    inp.write_text("C1CC\nnot a smiles\nc1cccc1\n")
    proc = molgen("evaluate", str(inp), "--json", str(js), "-j", "1", "--format", "table")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = strict_loads(js.read_text())  # bare NaN would raise
    assert metrics["valid"] == 0.0 and metrics["FCD/Test"] is None and metrics["SNN/Test"] is None
    assert metrics["caveats"] == ["no valid molecules: every metric but valid is undefined (null)"]
    assert "caveats: no valid molecules" in one_line(proc.stdout)
    piped = molgen("evaluate", str(inp), "-j", "1")  # not a terminal: CSV on stdout, the caveats on stderr
    table = pd.read_csv(StringIO(piped.stdout))
    assert list(table.columns) == ["metric", "value"] and table.set_index("metric").loc["valid", "value"] == 0.0
    assert "caveats: no valid molecules" in one_line(piped.stderr)
    as_json = strict_loads(molgen("evaluate", str(inp), "-j", "1", "--format", "json").stdout)
    assert as_json["FCD/Test"] is None and as_json["caveats"]


def test_small_evaluate_warns_nothing_and_says_why_in_caveats():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = mg.metrics.evaluate(DRUGS, n_jobs=1)
    assert list(metrics)[:-1] == [*mg.metrics.MOSES_KEYS, *mg.metrics.EXTRA_KEYS] and metrics["n"] == 5
    caveats = " | ".join(metrics["caveats"])
    assert "unique@1000 and unique@10000 on 5 valid" in caveats
    assert "FCD/Test, FCD/TestSF, FCD_score/Test on 5 molecules: FCD needs thousands" in caveats


# --- 4. the demo's table and folders ----------------------------------------------------------------


def _summary() -> pd.DataFrame:
    sources = ["graph-vae-moses", "smiles-gpt-moses", "smiles-gpt-moses-small", demo.REFERENCE_ROW]
    return pd.DataFrame([{"source": s, "n": 2000, **{k: 0.123 + i for k in demo.SUMMARY_KEYS},
                          "mean QED": 0.75, "mean SA": 2.9, "seconds": 12.5} for i, s in enumerate(sources)])


def _mission_state() -> dict:
    """What run_demo returns: every stage's figures (the shapes the demo writes to mission.json)."""
    figures = {"valid": 0.988, "unique": 1.0, "novel_target": 0.91, "FCD": 84.9, "SNN": 0.21, "scaffold_share": 0.0,
               "IntDiv": 0.85, "held_out_nll_common": 1.42}
    shift = [{"set": s, "n": n, "mean": 6.1, "q25": 5.7, "median": 6.0, "q75": 6.4, "max": 8.68}
             for s, n in (("target (measured)", 100), ("parent samples", 494), ("fine-tuned samples", 460),
                          ("candidates", 100))]
    return {"stages": {"pretrained": {"summary": _summary().to_dict("records")},
                       "finetune": {"steps": 150, "before": figures, "after": figures},
                       "property_model": {"rmse": 0.8, "baseline_rmse": 1.1, "spearman": 0.7},
                       "optimize": {"calls": 2000, "best": 0.81, "top10_mean": 0.79},
                       "candidates": {"n": 100, "shift": shift}}}  # fmt: skip


def test_demo_table_fits_80_columns(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from molgen.cli import app

    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: _mission_state())
    result = CliRunner().invoke(app, ["demo", "-o", str(tmp_path), "--format", "table"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "…" not in result.output and max(len(line) for line in lines) <= 80
    n_row = next(line for line in lines if line.startswith("│ n "))
    assert [c.strip() for c in n_row.split("│")[2:6]] == ["2,000"] * 4  # not 2000.000
    header = next(line for line in lines if "metric" in line)
    assert [c.strip() for c in header.split("┃")[2:6]] == ["vae", "gpt", "gpt-small", "moses-test"]
    assert "gpt-small = smiles-gpt-moses-small" in one_line(result.output)


def test_demo_writes_strict_json_into_folders_without_spaces(monkeypatch, tmp_path):
    sources = {"smiles-gpt-moses": pd.DataFrame({"smiles": DRUGS, "log_likelihood": -20.0}),
               demo.REFERENCE_ROW: pd.DataFrame({"smiles": ["C1CC", "xx"]})}  # nothing valid: null metrics
    monkeypatch.setattr(demo, "_sources", lambda n, seed, models: sources)
    summary = demo.compare_pretrained(tmp_path, n=5, n_jobs=1, progress=False)
    folders = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert folders == ["moses-test", "smiles-gpt-moses"] and summary["n"].tolist() == [5, 2]
    for folder in folders:
        metrics = strict_loads((tmp_path / folder / "metrics.json").read_text())
        assert metrics["caveats"]
    assert strict_loads((tmp_path / "moses-test" / "metrics.json").read_text())["FCD/Test"] is None


def test_every_writing_command_refused_leaves_an_existing_file_as_it_was(tmp_path):
    """score, evaluate --json, demo and pretrain: a refused call never touches what is there."""
    src = tmp_path / "in.csv"
    src.write_text("smiles,logp\nCCO,-0.31\nc1ccccc1,2.1\n")
    out, js = tmp_path / "out.csv", tmp_path / "m.json"
    out.write_text(EARLIER)
    js.write_text('{"earlier": 1}\n')
    refused = [
        ("score", str(src), "-o", str(out), "--smiles-col", "structure"),  # no such column
        ("score", str(tmp_path / "missing.csv"), "-o", str(out)),
        ("score", str(src), "-o", str(tmp_path / "out.xlsx")),
        ("evaluate", str(src), "--reference", "chembl", "--json", str(js)),
        ("evaluate", str(tmp_path / "missing.csv"), "--json", str(js)),
        ("demo", "-n", "5", "--out", str(tmp_path)),  # below the demo's smallest n
        ("pretrain", "--config", str(tmp_path)),  # a folder, not a TOML file
    ]
    for args in refused:
        code, output = cli(*args)
        assert code == 2, (args, output)
        assert "Traceback" not in output
    assert out.read_text() == EARLIER and js.read_text() == '{"earlier": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "m.json", "out.csv"]


def test_an_error_message_with_brackets_is_printed_whole(capsys):
    import typer

    from molgen.cli import friendly
    from molgen.errors import InputError

    @friendly
    def fails():
        raise InputError("[distill] teacher is missing; [Na+] stays")

    with pytest.raises(typer.Exit):
        fails()
    assert "[distill] teacher is missing; [Na+] stays" in " ".join(capsys.readouterr().err.split())
