"""RL against the prior (molgen.guide.rl, molgen.guide.memory): the loss, the diversity filter, the
replay buffer, a short run that raises the score within its budget, and resuming after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from molgen.chem import canonicalize, scaffold
from molgen.errors import ConfigError
from molgen.guide.memory import DiversityFilter, ReplayBuffer
from molgen.guide.rl import OptimizeConfig, _Run, optimize, rl_loss

ROOT = Path(__file__).resolve().parents[1]

# heavy-atom count through a rising sigmoid: the prior's molecules (about 24 heavy atoms) score ~0.06
HEAVY = """
[[component]]
kind = "heavy_atoms"
transform = { type = "sigmoid", low = 20, high = 34, k = 0.5 }
"""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # two threads on the two shared cores of CI stall each other in these small matmuls (about 5x slower)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def heavy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("objective") / "heavy.toml"
    path.write_text(HEAVY)
    return path


def test_loss_is_reinvent_and_ahc_keeps_the_best():
    agent = torch.tensor([-30.0, -20.0, -25.0, -40.0, -10.0], requires_grad=True)
    prior = torch.tensor([-31.0, -22.0, -24.0, -35.0, -12.0])
    scores = torch.tensor([0.1, 0.9, 0.5, 0.0, 0.7])
    per = (agent.detach() - (prior + 60 * scores)) ** 2
    assert torch.isclose(rl_loss(agent, prior, scores, 60.0), per.mean())
    # AHC: the best half of the 4 sampled rows (0.9, 0.5); the replayed last row always counts
    got = rl_loss(agent, prior, scores, 60.0, topk=0.5, n_replay=1)
    assert torch.isclose(got, per[[1, 2, 4]].mean())
    got.backward()  # the gradient pulls the agent's log-likelihood toward the augmented one
    assert agent.grad[1] < 0 and agent.grad[0] == 0 and agent.grad[3] == 0


def test_diversity_filter_zeroes_a_repeated_scaffold():
    f = DiversityFilter(bucket_size=2, min_score=0.4)
    mols = ["Cc1ccccc1", "CCc1ccccc1", "Oc1ccccc1", "CCCc1ccccc1", "C1CCNCC1"]
    canon = [canonicalize(s) for s in mols]
    scaffolds = [scaffold(s) for s in canon]
    assert len(set(scaffolds[:4])) == 1  # four benzenes
    rewards = f(canon, scaffolds, np.array([0.9, 0.8, 0.7, 0.6, 0.5]))
    np.testing.assert_allclose(rewards, [0.9, 0.8, 0.0, 0.0, 0.5])  # the third benzene onwards get 0
    assert f.full == ["c1ccccc1"]
    # a molecule sampled again gets 0; an invalid row 0; one below min_score passes and is not counted
    again = f([canon[4], None, "CC1CCCCC1"], [scaffolds[4], None, "C1CCCCC1"], np.array([0.5, np.nan, 0.3]))
    np.testing.assert_allclose(again, [0.0, 0.0, 0.3])
    assert f.buckets["C1CCCCC1"] == 0


def test_replay_buffer_keeps_the_best_once():
    buf = ReplayBuffer(size=2)
    buf.add(["A", "B", "C", None], [0.5, 0.9, 0.7, 1.0])
    buf.add(["A", "D", "E"], [1.0, 0.0, np.nan])  # a repeat (even a better one), 0 and NaN are ignored
    assert buf.items() == [("B", 0.9), ("C", 0.7)]
    smiles, rewards = buf.sample(5, np.random.default_rng(0))
    assert sorted(smiles) == ["B", "C"] and len(rewards) == 2


def test_invalid_and_cut_smiles_score_zero(heavy, tmp_path):
    run = _Run(OptimizeConfig(objective=heavy, budget=10, out=tmp_path, device="cpu"), None)
    raw = ["CCCCCCCCCCCCCCCCCCCCCCCCC", "C1CC", None, "CCO"]
    canon = [canonicalize(s) if s else None for s in raw]
    table = run.score(raw, canon)
    assert table["valid"].tolist() == [True, False, False, True]
    rewards = run.remember(canon, table["score"].to_numpy())
    assert rewards[1] == rewards[2] == 0 and rewards[0] > 0.1
    assert run.oracle.calls_used == 2  # only the valid ones cost a call


def test_rl_raises_the_score_within_budget_and_counts_no_repeat(heavy, tmp_path):
    budget = 200
    result = optimize({"objective": str(heavy), "budget": budget, "out": str(tmp_path / "run"), "batch_size": 32,
                       "lr": 5e-4, "seed": 0, "device": "cpu", "checkpoint_every": 3}, log=None)  # fmt: skip
    steps, mols = result.steps, result.molecules
    assert result.stop_reason.startswith("budget")
    assert len(mols) == budget and mols["oracle_call"].tolist() == list(range(1, budget + 1))
    assert mols["smiles"].is_unique and steps["calls_used"].iloc[-1] == budget
    assert steps["mean_score"].iloc[-2:].mean() > steps["mean_score"].iloc[0] + 0.1, steps["mean_score"].tolist()
    assert list(mols.columns) == ["step", "oracle_call", "smiles", "score", "heavy_atoms", "heavy_atoms_d", "scaffold"]
    # the final agent is a checkpoint folder molgen can load
    from molgen.models import load_pretrained

    assert load_pretrained(result.out / "agent", device="cpu").provenance["oracle_calls"] == budget
    with pytest.raises(ConfigError, match="--resume"):
        optimize({"objective": str(heavy), "budget": budget, "out": str(tmp_path / "run")}, log=None)


def test_repeats_cost_no_oracle_call(heavy, tmp_path):
    # at a low temperature the prior repeats itself: sampled valid molecules outnumber oracle calls
    result = optimize({"objective": str(heavy), "budget": 1000, "out": str(tmp_path), "batch_size": 32,
                       "temperature": 0.3, "device": "cpu", "stop": {"max_steps": 2}}, log=None)  # fmt: skip
    sampled_valid = (result.steps["valid"] * 32).round().sum()
    assert len(result.molecules) < sampled_valid
    assert result.molecules["smiles"].is_unique
    assert result.steps["calls_used"].iloc[-1] == len(result.molecules)


def _run_cli(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "molgen.cli", "optimize", "--config", str(config), *extra],
                            cwd=config.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_resume_after_sigkill_continues_the_csv(heavy, tmp_path):
    config = tmp_path / "run.toml"
    base = (f'objective = "{heavy}"\nbudget = 100000\nbatch_size = 16\nlr = 5e-4\ndevice = "cpu"\n'
            "checkpoint_every = 2\n")
    config.write_text(base + 'out = "killed"\n[stop]\nmax_steps = 7\n')
    proc = _run_cli(config)
    steps = tmp_path / "killed" / "steps.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if steps.exists() and len(steps.read_text().splitlines()) >= 1 + 3:  # step 3 done, checkpoint at 2
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = pd.read_csv(tmp_path / "killed" / "optimize.csv")
    assert before["step"].max() >= 3

    resumed = _run_cli(config, "--resume")
    _, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    assert "resuming at step" in err
    after = pd.read_csv(tmp_path / "killed" / "optimize.csv")
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before)  # the same prefix
    assert after["oracle_call"].tolist() == list(range(1, len(after) + 1)) and after["smiles"].is_unique
    assert after["step"].max() == 7

    # and the same file as a run that was never killed (every step samples with its own seed)
    config.write_text(base + 'out = "whole"\n[stop]\nmax_steps = 7\n')
    whole = _run_cli(config)
    _, err = whole.communicate(timeout=180)
    assert whole.returncode == 0, err
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "whole" / "optimize.csv"), after)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "whole" / "steps.csv").drop(columns="seconds"),
                                  pd.read_csv(tmp_path / "killed" / "steps.csv").drop(columns="seconds"))


def test_config_is_checked(tmp_path):
    cfg = OptimizeConfig.from_toml(ROOT / "scripts/configs/optimize_qed.toml")
    assert cfg.objective == ROOT / "scripts/configs/objective_qed.toml" and cfg.budget == 2000
    bad = tmp_path / "bad.toml"
    bad.write_text('objective = "x.toml"\nbudget = 10\nout = "o"\nsigmaa = 3\n[replay]\nsize = -1\n')
    with pytest.raises(ConfigError) as err:
        OptimizeConfig.from_toml(bad)
    assert "sigmaa: unknown key" in str(err.value) and "replay.size" in str(err.value)


# --- scaffold-constrained RL ---------------------------------------------------------------------

BENZAMIDE = "c1ccc([*])cc1C(=O)N[*]"
QED = ROOT / "scripts/configs/objective_qed.toml"


def _scaffold_config(out: Path, **extra) -> dict:
    return {"objective": str(QED), "scaffold": BENZAMIDE, "out": str(out), "batch_size": 16, "lr": 5e-4,
            "device": "cpu", **extra}  # fmt: skip


def test_scaffold_run_scores_only_molecules_on_the_scaffold(tmp_path):
    from rdkit import Chem

    result = optimize(_scaffold_config(tmp_path / "run", budget=40), log=None)
    mols = result.molecules
    assert len(mols) == 40 and list(mols.columns)[-2:] == ["contains_scaffold", "sampled"]
    core = Chem.MolFromSmiles("c1ccccc1C(=O)N")  # the scaffold without its [*]
    assert all(Chem.MolFromSmiles(s).HasSubstructMatch(core) for s in mols["smiles"])
    assert mols["contains_scaffold"].all()
    # the spelling the agent wrote starts with the scaffold's tokens and is the molecule written down
    assert all(canonicalize(s) == c for s, c in zip(mols["sampled"], mols["smiles"], strict=True))
    assert mols["sampled"].str.startswith("N(").all()


def test_masked_log_prob_counts_the_free_tokens_only(tmp_path):
    run = _Run(OptimizeConfig(**_scaffold_config(tmp_path, budget=10)), None)
    seq, raw, canon, free = run.sample(1)
    model = run.prior
    pad = model.config.pad_id
    with torch.no_grad():
        logits, _ = model(seq[:, :-1])
        per_token = torch.log_softmax(logits.float(), -1).gather(2, seq[:, 1:, None]).squeeze(2)  # (B, L-1)
        masked = model.sequence_log_prob(seq, mask=free)
        unmasked = model.sequence_log_prob(seq)
    for i in range(len(seq)):  # by hand: the sum over the tokens the sampler drew
        n = int((seq[i] != pad).sum())
        by_hand = sum(float(per_token[i, t - 1]) for t in range(1, n) if free[i, t])
        assert masked[i].item() == pytest.approx(by_hand, abs=1e-3)
    assert (masked > unmasked).all()  # the forced scaffold tokens (log-prob < 0) are left out
    # the unmasked path is the old formula, bit for bit
    assert torch.equal(unmasked, (per_token * (seq[:, 1:] != pad)).sum(1))
    # replay recomputes the same free tokens from the written spelling alone
    for i, s in enumerate(raw):
        if s is not None:
            ids, walked = run._free_tokens(s)
            assert ids == seq[i, : len(ids)].tolist() and walked == free[i, 1 : len(ids)].tolist()
    assert run._free_tokens("CCOc1ccccc1") is None  # not written on the template: never replayed


def test_scaffold_run_resumes_to_the_same_file(tmp_path):
    def kill_at_step_3(line: str) -> None:
        if line.startswith("step    3"):
            raise KeyboardInterrupt

    cfg = _scaffold_config(tmp_path / "killed", budget=10_000, checkpoint_every=2, stop={"max_steps": 5})
    with pytest.raises(KeyboardInterrupt, match="--resume"):
        optimize(cfg, log=kill_at_step_3)  # step 3's rows are written, the agent checkpointed at step 2
    assert pd.read_csv(tmp_path / "killed" / "optimize.csv")["step"].max() == 3
    lines: list[str] = []
    resumed = optimize(cfg, resume=True, log=lines.append)
    assert lines[0].startswith("resuming at step 3") and resumed.molecules["step"].max() == 5
    whole = optimize(_scaffold_config(tmp_path / "whole", budget=10_000, checkpoint_every=2, stop={"max_steps": 5}),
                     log=None)  # fmt: skip
    pd.testing.assert_frame_equal(resumed.molecules, whole.molecules)
    pd.testing.assert_frame_equal(resumed.steps.drop(columns="seconds"), whole.steps.drop(columns="seconds"))
    with pytest.raises(ConfigError, match="scaffold"):  # another scaffold is another run
        optimize({**cfg, "scaffold": "c1ccc([*])cc1"}, resume=True, log=None)


@pytest.mark.parametrize(("bad", "why"), [("c1ccc([*])cc1C(=O", "not a valid SMILES"),
                                          ("c1ccc([*])cc1[Si](C)(C)C", "vocabulary")])  # fmt: skip
def test_bad_scaffold_is_refused_before_sampling(tmp_path, monkeypatch, bad, why):
    from molgen.models.gpt import SmilesGPT

    def never(*args, **kwargs):
        raise AssertionError("sampled")

    monkeypatch.setattr(SmilesGPT, "generate", never)
    with pytest.raises(ConfigError) as err:
        optimize(_scaffold_config(tmp_path / "run", budget=10, scaffold=bad), log=None)
    assert "scaffold: " in str(err.value)
    assert why in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run" / "optimize.csv").exists()


def test_scaffold_config_is_read():
    cfg = OptimizeConfig.from_toml(ROOT / "scripts/configs/optimize_scaffold_qed.toml")
    assert cfg.scaffold == BENZAMIDE and cfg.objective == QED and cfg.budget == 1000
