"""Training: tiny runs learn, export, resume at the saved step, fine-tune and distil; configs say their
task and fail clearly; every shipped config loads; DDP on CPU."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
import torch

import molgen as mg
from molgen import chem
from molgen.config import load_config, model_section, parse_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from molgen.errors import ConfigError
from molgen.train import cosine_schedule, pretrain, resume_checkpoint, run_configs, shuffle_generator

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "scripts" / "configs" / "pretrain_gpt_tiny.toml"


def tiny_config(tmp_path, **trainer):
    data = tomllib.loads(TINY.read_text())
    data["run_dir"] = str(tmp_path / "run")
    data["trainer"].update(trainer)
    return data


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    data = tiny_config(tmp)
    export = pretrain(parse_config(data, "tiny"))
    return tmp, data, export


def test_tiny_run_learns_and_exports(tiny_run):
    tmp, data, export = tiny_run
    log = pd.read_csv(tmp / "run" / "logs" / "version_0" / "metrics.csv")
    train = log["train_loss"].dropna().tolist()
    val = log["val_nll"].dropna().tolist()
    assert train[-1] < train[0] - 0.3 and val[-1] < val[0]
    model = mg.load_pretrained(export, device="cpu")
    prov = model.provenance
    assert prov["steps"] == 40 and prov["tokens_seen"] > 40 * 32 * 20
    # the last validation travels with the weights (the run's logs do not leave this machine)
    assert prov["validation"]["step"] == 40 and prov["validation"]["val_nll"] == pytest.approx(val[-1], abs=1e-4)
    assert prov["data"]["name"] == "moses/train[:500]" and len(prov["data"]["sha256"]) == 64
    assert not list(export.glob("*.ckpt"))  # pickled Lightning state stays in the run dir
    assert (tmp / "run" / "checkpoints" / "last.ckpt").exists()


def test_resume_continues_from_the_saved_step(tiny_run):
    tmp, data, export = tiny_run
    before = mg.load_pretrained(export, device="cpu").provenance["tokens_seen"]
    data = dict(data, trainer=dict(data["trainer"], max_steps=50))
    pretrain(parse_config(data, "tiny"), resume=True)
    prov = mg.load_pretrained(export, device="cpu").provenance
    assert prov["steps"] == 50 and prov["tokens_seen"] > before
    ckpt = torch.load(tmp / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 50


def test_fresh_start_over_a_run_and_resume_without_one_are_refused(tiny_run, tmp_path):
    _, data, _ = tiny_run
    with pytest.raises(ConfigError, match="--resume"):
        pretrain(parse_config(data, "tiny"))
    with pytest.raises(ConfigError, match="no checkpoint"):
        pretrain(parse_config(tiny_config(tmp_path), "tiny"), resume=True)


def test_fine_tuning_start_extends_the_vocabulary(tiny_run, tmp_path):
    _, _, export = tiny_run
    table = tmp_path / "new.csv"
    pd.DataFrame({"smiles": ["CC[Se]C", "BrCC[Se]CCBr", "CCO"] * 10 + ["not a molecule"]}).to_csv(table, index=False)
    data = tiny_config(tmp_path, max_steps=3, val_every_steps=3, batch_size=8)
    data.update(task="finetune", init_from=str(export), data={"dataset": str(table), "val_size": 2})
    out = pretrain(parse_config(data, "finetune"))
    model = mg.load_pretrained(out, device="cpu")
    assert "[Se]" in model.tokenizer.stoi and model.config.vocab_size == len(model.tokenizer)
    assert model.provenance["steps"] == 3 and model.provenance["parent"] == str(export) and model.provenance["data"]["invalid_skipped"] == 1


def test_an_aromatic_parent_fine_tuned_to_write_kekule_smiles(tiny_run, tmp_path):
    from molgen.models.smiles_grammar import is_aromatic

    _, _, export = tiny_run
    data = tiny_config(tmp_path, max_steps=3, val_every_steps=3, batch_size=8)
    data.update(task="finetune", init_from=str(export), data=dict(data["data"], kekule=True))
    model = mg.load_pretrained(pretrain(parse_config(data, "kekule")), device="cpu")
    parent = mg.load_pretrained(export, device="cpu")
    assert model.tokenizer.kekule and not parent.tokenizer.kekule
    assert model.tokenizer.itos == parent.tokenizer.itos  # same ids: MOSES's Kekulé form needs no new token
    ids = model.tokenizer.encode("Cc1ccncc1")
    assert not any(is_aromatic(model.tokenizer.itos[i]) for i in ids)
    aromatic, kekule = model.log_likelihood(["Cc1ccncc1", "CC1=CC=NC=C1"])
    assert np.isfinite(aromatic) and aromatic == pytest.approx(kekule)  # one molecule, one likelihood


def _kl_to(teacher, student, smiles) -> float:
    """Mean KL(teacher || student) per real next-token position of ``smiles``."""
    ids = torch.as_tensor(teacher.tokenizer.encode_batch(smiles))
    x, real = ids[:, :-1], ids[:, 1:] != teacher.config.pad_id
    with torch.no_grad():
        p, q = (torch.log_softmax(m(x)[0][real], -1) for m in (teacher, student))
    return float(torch.nn.functional.kl_div(q, p, log_target=True, reduction="batchmean"))


def test_distillation_teaches_a_smaller_student_what_the_teacher_says_not_what_the_data_says(tiny_run, tmp_path):
    """On a handful of small molecules, a student trained on their tokens learns them by heart; a student
    distilled from the MOSES-trained teacher on the same molecules learns the teacher's broad next-token
    distributions instead. The distilled run also resumes (its checkpoint holds no teacher weights)."""
    _, _, export = tiny_run
    teacher = mg.load_pretrained(export, device="cpu")
    few = ["CCO", "CCN", "CC(=O)O", "c1ccccc1", "CCOC(=O)C", "CN(C)C", "OCCO", "NCCN"]
    table = tmp_path / "few.csv"
    pd.DataFrame({"smiles": few * 5}).to_csv(table, index=False)
    students = {}
    for alpha in (0.0, 1.0):
        data = tiny_config(tmp_path / str(alpha), max_steps=30, val_every_steps=30, batch_size=8)
        data.update(task="distill", model={"n_layer": 1, "n_head": 2, "n_kv_head": 1, "n_embd": 32, "block_size": 64},
                    data={"dataset": str(table), "val_size": 2}, distill={"teacher": str(export), "alpha": alpha})  # fmt: skip
        out = pretrain(parse_config(data, "student"))
        ckpt = torch.load(tmp_path / str(alpha) / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])
        data["trainer"]["max_steps"] = 60
        pretrain(parse_config(data, "student"), resume=True)
        students[alpha] = mg.load_pretrained(out, device="cpu")
    distilled, plain = students[1.0], students[0.0]
    assert distilled.tokenizer == teacher.tokenizer and distilled.config.n_kv_head == 1
    assert distilled.provenance["steps"] == 60 and distilled.provenance["train_config"]["distill"]["teacher"] == str(export)
    assert distilled.provenance["teacher"]["steps"] == teacher.provenance["steps"] and len(distilled.provenance["teacher"]["sha256"]) == 64
    assert distilled.num_params() < teacher.num_params() / 3
    assert _kl_to(teacher, distilled, few) < 0.5 * _kl_to(teacher, plain, few)


def test_a_student_refuses_data_or_a_smiles_form_its_teacher_never_saw(tiny_run, tmp_path):
    _, _, export = tiny_run
    table = tmp_path / "se.csv"
    pd.DataFrame({"smiles": ["CC[Se]C", "CCO"] * 10}).to_csv(table, index=False)
    data = tiny_config(tmp_path, max_steps=2)
    data.update(task="distill", distill={"teacher": str(export)}, data={"dataset": str(table), "val_size": 2})
    with pytest.raises(ConfigError, match=r"teacher .* knows \d+ tokens; the training data also has \['\[Se\]'\]"):
        pretrain(parse_config(data, "student"))
    data["data"] = {"dataset": "moses", "limit": 50, "kekule": True}
    with pytest.raises(ConfigError, match="the teacher writes aromatic SMILES"):
        pretrain(parse_config(data, "student"))


@pytest.mark.parametrize(
    "text, message",
    [
        ('model_type = "gpt"\nname = "x"\n[trainer]\nmax_steps = 5\nbatch_sise = 3\n', r"bad\.toml: unknown key 'trainer\.batch_sise'"),
        ('model_type = "gpt"\nname = "x"\n', "missing key 'trainer'"),
        ('model_type = "rnn"\n', "model_type must be one of"),
        ('model_type = "gpt"\nname = "x"\n[trainer]\nmax_steps = "many"\n', "trainer.max_steps"),
        ("model_type = [", "not valid TOML"),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.parametrize("what", ["folder", "run folder", "missing", "binary", "csv"])
def test_a_config_that_is_not_a_toml_file_is_one_line_and_exit_2(tmp_path, what):
    from typer.testing import CliRunner

    from molgen.cli import app

    path = {"folder": tmp_path, "run folder": tmp_path, "missing": tmp_path / "nope.toml",
            "binary": tmp_path / "weights.toml", "csv": tmp_path / "mols.csv"}[what]  # fmt: skip
    if what == "run folder":
        (tmp_path / "config.toml").write_text(TINY.read_text())
    if what == "binary":
        path.write_bytes((ROOT / "molgen" / "pretrained" / "graph-vae-moses" / "model.safetensors").read_bytes()[:200])
    if what == "csv":
        path.write_text("smiles,y\nCC(=O)Oc1ccccc1C(=O)O,1.0\n")
    message = {"folder": "is a folder", "run folder": "keeps its config as", "missing": "does not exist",
               "binary": "not a TOML text file", "csv": "not valid TOML"}[what]  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    result = CliRunner().invoke(app, ["pretrain", "--config", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output


def test_resume_takes_the_newer_of_the_periodic_and_the_interrupt_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert resume_checkpoint(tmp_path) is None
    last, stopped = folder / "last.ckpt", folder / "interrupted.ckpt"
    last.write_bytes(b"x")
    assert resume_checkpoint(tmp_path) == last
    stopped.write_bytes(b"x")
    os.utime(last, ns=(1_000_000_000, 1_000_000_000))
    assert resume_checkpoint(tmp_path) == stopped
    os.utime(stopped, ns=(500_000_000, 500_000_000))
    assert resume_checkpoint(tmp_path) == last


def _train_until(config: Path, sig: int, after_step: int, *extra: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``molgen pretrain`` in a subprocess, sent ``sig`` once it has printed ``step <after_step>``."""
    cmd = [sys.executable, "-m", "molgen.cli", "pretrain", "--config", str(config), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="300")
    # a shell's background job ignores SIGINT and a child inherits that: give it Python's Ctrl-C back
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    seen, deadline = [], time.monotonic() + 90
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(f"step {after_step} ") or time.monotonic() > deadline:
            proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(seen) + out, err), seen


def test_ctrl_c_saves_a_checkpoint_that_resume_continues_from(tmp_path):
    """Ctrl-C (and SLURM's SIGTERM) in the middle of a run: a checkpoint of the step reached, one line
    saying where it is and how to continue, exit 130 (143); --resume continues from that step."""
    data = tiny_config(tmp_path, max_steps=100_000, log_every_steps=1, val_every_steps=100_000, checkpoint_minutes=60)
    config = tmp_path / "long.toml"
    config.write_text(_to_toml(data))
    stopped = tmp_path / "run" / "checkpoints" / "interrupted.ckpt"

    proc, _ = _train_until(config, signal.SIGINT, 4)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    step = torch.load(stopped, map_location="cpu", weights_only=False)["global_step"]
    assert step >= 4
    line = f"interrupted at step {step}: checkpoint {stopped}; `molgen pretrain --config {config} --resume` continues from it"
    assert line in proc.stderr.splitlines(), proc.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()  # no periodic save yet: only the interrupt's

    proc, seen = _train_until(config, signal.SIGTERM, step + 3, "--resume")
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert seen[0] == f"resumed at step {step}\n" and seen[1].startswith(f"step {step + 1} ")
    again = torch.load(stopped, map_location="cpu", weights_only=False)
    assert again["global_step"] >= step + 3 and again["molgen"]["tokens_seen"] > 0
    assert f"interrupted at step {again['global_step']}: checkpoint {stopped};" in proc.stderr


CONFIGS = ROOT / "scripts" / "configs"
# every config in scripts/configs: (model_type, task)
KNOWN_CONFIGS = {
    "distill_gpt_cpu_small.toml": ("gpt", "distill"),
    "finetune_gpt_chembl2321810.toml": ("gpt", "finetune"),
    "pretrain_gpt.toml": ("gpt", "pretrain"),
    "pretrain_gpt_cpu.toml": ("gpt", "pretrain"),
    "pretrain_gpt_cpu_kekule.toml": ("gpt", "finetune"),
    "pretrain_gpt_cpu_m.toml": ("gpt", "pretrain"),
    "pretrain_gpt_tiny.toml": ("gpt", "pretrain"),
    "pretrain_vae.toml": ("graph_vae", "pretrain"),
    "pretrain_vae_cpu.toml": ("graph_vae", "pretrain"),
    "pretrain_vae_cpu_ft.toml": ("graph_vae", "finetune"),
}


def test_shipped_configs_are_valid():
    # run configs (training); objective_*.toml and optimize_*.toml are other kinds of file
    paths = sorted(p for p in CONFIGS.glob("*.toml") if p.name.startswith(("pretrain_", "distill_", "finetune_")))
    assert set(KNOWN_CONFIGS) <= {p.name for p in paths}, "a known config is missing from scripts/configs"
    for path in paths:
        config = load_config(path)
        assert tomllib.loads(path.read_text())["task"] == config.task, f"{path.name} says its task"
        if path.name in KNOWN_CONFIGS:
            assert (config.model_type, config.task) == KNOWN_CONFIGS[path.name]
        if path.name.startswith("pretrain_gpt"):
            assert config.model_type == "gpt"


@pytest.mark.parametrize(
    "config, shipped",
    [
        ("distill_gpt_cpu_small.toml", "smiles-gpt-moses-small"),
        ("pretrain_gpt_cpu_m.toml", "smiles-gpt-moses"),  # its shape; the Kekulé leg (init_from) kept it
        ("pretrain_vae_cpu.toml", "graph-vae-moses"),
    ],
)
def test_the_configs_that_trained_shipped_models_have_their_shape(config, shipped):
    meta = json.loads((ROOT / "molgen" / "pretrained" / shipped / "config.json").read_text())
    model = load_config(CONFIGS / config).model
    # what the task sets (vocabulary size, fitted prior, ...) comes from the shipped folder; the rest from the file
    shape = dataclasses.asdict(model.shape(**{k: meta["config"][k] for k in model.set_by_task if k in meta["config"]}))
    assert {k: shape[k] for k in meta["config"]} == meta["config"]
    recorded = meta["provenance"].get("train_config", {})
    if recorded.get("name") == load_config(CONFIGS / config).name:  # the run itself: the file repeats it
        dump = model.model_dump()
        # cond_dim left the [model] section for [condition] (a conditional model is a fine-tuning choice);
        # the shipped runs were unconditional
        assert {k: v for k, v in recorded["model"].items() if k not in dump} in ({}, {"cond_dim": 0})
        assert {k: dump[k] for k in recorded["model"] if k in dump} == {k: v for k, v in recorded["model"].items() if k in dump}
        assert recorded.get("distill") in (None, load_config(CONFIGS / config).model_dump().get("distill"))


def _tiny_raw(**changes) -> dict:
    data = tomllib.loads(TINY.read_text())
    data.pop("task")
    for key, value in changes.items():
        data[key] = dict(data.get(key, {}), **value) if isinstance(value, dict) else value
    return data


@pytest.mark.parametrize(
    "changes, task",
    [({}, "pretrain"), ({"init_from": "smiles-gpt-moses"}, "finetune"), ({"distill": {"teacher": "smiles-gpt-moses"}}, "distill"),
     ({"init_from": "smiles-gpt-moses", "distill": {"teacher": "smiles-gpt-moses"}}, "distill")],  # fmt: skip
)
def test_a_config_without_a_task_gets_the_one_its_content_implies(changes, task):
    config = parse_config(_tiny_raw(**changes), "old.toml")
    assert config.task == task and config.model_dump()["task"] == task  # recorded in the provenance
    assert parse_config(_tiny_raw(task=task, **changes), "new.toml") == config


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"task": "rl"}, r"bad\.toml: task: 'rl' is not available yet \(reinforcement learning"),
        ({"task": "property"}, r"task: 'property' is not available yet"),
        ({"task": "train"}, r"task: must be one of pretrain, finetune, distill, got 'train'"),
        ({"task": "pretrain", "distill": {"teacher": "smiles-gpt-moses"}},
         r"bad\.toml: task = 'pretrain' starts from random weights, but the config has distill\.teacher = 'smiles-gpt-moses': set task = 'distill'"),
        ({"task": "pretrain", "init_from": "p"}, r"but the config has init_from = 'p': set task = 'finetune'"),
        ({"task": "finetune"}, r"task = 'finetune' needs init_from"),
        ({"task": "finetune", "init_from": "p", "distill": {"teacher": "t"}}, r"that is task = 'distill'"),
        ({"task": "distill"}, r"task = 'distill' needs distill\.teacher"),
        ({"model": {"cond_dim": 4}}, r"unknown key 'model\.cond_dim'"),  # [condition] properties set it
        ({"condition": {"properties": ["logp", "clogp"]}}, r"'clogp': not an RDKit property \(logp, qed, tpsa, mw\), and MOSES has no other columns"),
        ({"init_from": "p", "condition": {"properties": ["qed"]}, "finetune": {"rehearsal": 0.2}},
         r"\[condition\] properties cannot be combined with finetune\.rehearsal"),
        ({"model": {"n_layer": 0}}, r"model\.n_layer: Input should be greater than or equal to 1"),
        ({"model": {"n_embd": 100, "n_head": 3}}, r"model: n_embd \(100\) must be a multiple of n_head \(3\)"),
        ({"model": {"vocab_size": 30}}, r"unknown key 'model\.vocab_size'"),  # the data sets it
    ],
)  # fmt: skip
def test_task_and_shape_errors_are_one_clear_config_error(changes, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_tiny_raw(**changes), "bad.toml")


def test_a_parent_conditional_on_other_values_is_refused(tmp_path):
    from molgen.models.gpt import GPTConfig, SmilesGPT
    from molgen.models.hub import save_pretrained
    from molgen.tokenize import SmilesTokenizer

    tokenizer = SmilesTokenizer.from_smiles(["CCO", "c1ccccc1"])
    parent = SmilesGPT(GPTConfig(vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=16, block_size=16, cond_dim=3))
    parent.tokenizer = tokenizer
    save_pretrained(parent, tmp_path / "cond")
    data = _tiny_raw(task="finetune", init_from=str(tmp_path / "cond"), run_dir=str(tmp_path / "run"),
                     data={"limit": 20, "val_size": 5}, trainer={"max_steps": 1})  # fmt: skip
    with pytest.raises(ConfigError, match=r"is conditional on 3 unnamed values; fine-tune it with \[condition\] properties"):
        pretrain(parse_config(data, "cond"))


def test_a_model_type_is_one_registration_and_its_table_is_its_dataclass():
    from molgen.models.hub import model_class

    @dataclasses.dataclass
    class Shape:
        width: int = 8
        depth: int = 2
        vocab: int = 10

    section = model_section(Shape, set_by_task=("vocab",), limits={"depth": pydantic.Field(ge=1)})
    assert list(section.model_fields) == ["width", "depth"] and section(width=4).shape(vocab=3) == Shape(4, 2, 3)
    for bad in ({"depth": 0}, {"vocab": 3}):
        with pytest.raises(pydantic.ValidationError):
            section(**bad)
    with pytest.raises(TypeError, match="has no field depht"):
        model_section(Shape, limits={"depht": pydantic.Field(ge=1)})
    assert set(run_configs()) == {"gpt", "graph_vae"}
    for model_type, run_config in run_configs().items():
        table = run_config.model_fields["model"].annotation
        config_class = model_class(model_type).config_class
        assert table.shape_class is config_class  # every field of the dataclass is a key, bar what the task sets
        assert {f.name for f in dataclasses.fields(config_class)} - set(table.set_by_task) <= set(table.model_fields)


def test_cosine_schedule():
    assert cosine_schedule(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert cosine_schedule(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert cosine_schedule(55, 10, 100, 0.1) == pytest.approx(0.55)
    assert cosine_schedule(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert cosine_schedule(500, 10, 100, 0.1) == pytest.approx(0.1)


def test_a_resumed_run_reshuffles_instead_of_replaying_the_epoch():
    from types import SimpleNamespace

    def order(step):
        dm = SimpleNamespace(trainer=SimpleNamespace(global_step=step), config=SimpleNamespace(trainer=SimpleNamespace(seed=3)))
        return torch.randperm(1000, generator=shuffle_generator(dm))

    assert torch.equal(order(0), order(0)) and torch.equal(order(6715), order(6715))
    assert not torch.equal(order(0), order(6715))


def test_token_cache_is_built_once_and_memory_mapped(tmp_path, monkeypatch, real_smiles):
    from molgen.train.gpt import tokenized_file

    monkeypatch.setenv("MOLGEN_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "mols.csv.gz"
    with gzip.open(src, "wt") as fh:
        fh.write("SMILES\n" + "\n".join(real_smiles) + "\n")
    first = tokenized_file(src)
    again = tokenized_file(src)
    assert isinstance(again.ids, __import__("numpy").memmap)
    assert first.tokenizer == again.tokenizer and first.info["sha256"] == again.info["sha256"]
    assert again.tokenizer.decode_batch(again.ids) == real_smiles
    assert len(list((tmp_path / "cache" / "smiles_tokens").iterdir())) == 1
    kekule = tokenized_file(src, kekule=True)  # its own vocabulary and cache, the same molecules
    assert kekule.tokenizer.kekule and len(list((tmp_path / "cache" / "smiles_tokens").iterdir())) == 2
    assert [chem.canonicalize(s) for s in kekule.tokenizer.decode_batch(kekule.ids)] == [chem.canonicalize(s) for s in real_smiles]


def test_ddp_two_cpu_processes_with_torchrun(tmp_path):
    """The same config trains under torchrun with 2 gloo processes (DDP) and counts both ranks' tokens."""
    data = tiny_config(tmp_path, max_steps=6, val_every_steps=6, strategy="ddp", devices=2, batch_size=16)
    data["trainer"]["accelerator"] = "cpu"
    path = tmp_path / "ddp.toml"
    path.write_text(_to_toml(data))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "molgen.cli", "pretrain", "--config", str(path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prov = json.loads((tmp_path / "run" / "export" / "config.json").read_text())["provenance"]
    assert prov["steps"] == 6
    # 2 ranks x 16 molecules x >= 20 tokens per step
    assert prov["tokens_seen"] > 6 * 2 * 16 * 20


def _to_toml(data: dict) -> str:
    top = [f"{k} = {json.dumps(v)}" for k, v in data.items() if not isinstance(v, dict)]
    tables = [f"[{k}]\n" + "\n".join(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items()) for k, v in data.items() if isinstance(v, dict)]
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"
