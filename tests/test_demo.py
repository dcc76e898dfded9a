"""molgen.demo: the whole mission (target set, fine-tuning, property model, guidance, candidates, report)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from molgen import demo
from molgen.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SERIES = ["CC(=O)Nc1ccc(O)cc1", "CC(=O)Oc1ccccc1C(=O)O", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
          "COc1ccc2[nH]cc(CCNC(C)=O)c2c1", "CN1CCC[C@H]1c1cccnc1", "OC(=O)c1ccccc1O", "c1ccc2c(c1)cccc2O",
          "CCN(CC)C(=O)c1cccc(C)c1", "NC(=O)c1cccnc1", "CC(C)NCC(O)c1ccc(O)c(O)c1", "COc1ccccc1O"]  # fmt: skip


def test_load_target_counts_every_skip_and_averages_duplicates():
    df = pd.DataFrame({"SMILES": [*SERIES, "not a molecule", "CCO", "CCO", "OCC", "CCN", "CCC"],
                       "pIC50": [*np.linspace(5, 8, len(SERIES)), 6.0, 5.0, 7.0, 6.0, np.nan, "n/a"]})
    df.loc[len(df)] = ["CCCl", np.inf]
    target = demo.load_target(df, "pIC50", smiles_col="SMILES", n_train=10)
    assert target.skipped == {"unreadable_molecule": 1, "no_finite_value": 3, "duplicates_averaged": 2}
    assert len(target.table) == len(SERIES) + 1  # ethanol three times (CCO, CCO, OCC) is one molecule
    assert target.table.set_index("smiles").loc["CCO", "value"] == pytest.approx(6.0)
    assert len(target.train) == 10 and len(target.held_out) == len(target.table) - 10
    assert not set(target.train["smiles"]) & set(target.held_out["smiles"])
    again = demo.load_target(df, "pIC50", smiles_col="SMILES", n_train=10)
    assert again.train.equals(target.train)  # seeded


def test_load_target_refuses_what_it_cannot_use(tmp_path):
    df = pd.DataFrame({"smiles": SERIES, "pIC50": 6.0})
    with pytest.raises(InputError, match=r"no column 'activity'.*smiles, pIC50"):
        demo.load_target(df, "activity")
    with pytest.raises(InputError, match="only 3 usable molecules"):
        demo.load_target(df.head(3), "pIC50")
    with pytest.raises(InputError, match="neither a file nor a data set name"):
        demo.load_target(str(tmp_path / "missing.csv"), "pIC50")
    path = tmp_path / "mine.csv"
    df.to_csv(path, index=False)
    assert len(demo.load_target(path, "pIC50", n_train=8).train) == 8


def test_default_target_is_the_shipped_series():
    target = demo.load_target(demo.DEFAULT_TARGET, demo.DEFAULT_TARGET_COL)
    assert len(target.table) == 1017 and len(target.train) == 100 and target.skipped["unreadable_molecule"] == 0
    assert demo.target_scaffold(target.train["smiles"].tolist()) == "cNS(=O)(=O)c1ccc(Oc2ccccc2)cc1"


def test_objective_rewards_going_past_the_best_known_value(tmp_path):
    from molgen.guide import Objective

    target = demo.load_target(pd.DataFrame({"smiles": SERIES, "y": np.linspace(5, 8, len(SERIES))}), "y", n_train=10)
    for higher in (True, False):
        text = demo._objective_toml(target, higher)
        (tmp_path / "objective.toml").write_text(text)
        first = tomllib.loads(text)["component"][0]
        v = target.train["value"]
        assert first["kind"] == "property_model"
        if higher:  # from the median to past the best
            assert first["transform"]["type"] == "sigmoid" and first["transform"]["low"] == pytest.approx(v.median(), abs=1e-3)
            assert first["transform"]["high"] > v.max()
        else:
            assert first["transform"]["type"] == "reverse_sigmoid" and first["transform"]["low"] < v.min()
    # it parses as an objective once the property model it names exists
    from molgen.transfer import PropertyModel

    PropertyModel("ecfp", head="ridge").fit(target.train, target="value").save(tmp_path / "property_model")
    objective = Objective.from_toml(tmp_path / "objective.toml")
    assert objective.names == ["predicted", "qed", "sa", "alerts"]


class _Stages:
    """Stand-ins for the expensive stages that record what ran (the orchestration is what is tested)."""

    def __init__(self, monkeypatch, fail_in: str | None = None):
        self.ran: list[str] = []
        self.fail_in = fail_in
        for name in ("_write_target", "_finetune", "_optimize", "_judge"):
            monkeypatch.setattr(demo, name, self._stage(name))
        monkeypatch.setattr(demo, "_fit_property", self._stage("_fit_property"))
        monkeypatch.setattr(demo, "_report", lambda out, target: self.ran.append("_report") or out / "report.html")

    def _stage(self, name):
        def run(*args, **kwargs):
            if name == self.fail_in:
                raise KeyboardInterrupt("stopped")
            self.ran.append(name)
            return {"figure": 1.0}

        return run


def test_a_rerun_keeps_finished_stages_and_refuses_other_settings(monkeypatch, tmp_path):
    df = pd.DataFrame({"smiles": SERIES, "y": np.linspace(5, 8, len(SERIES))})
    path = tmp_path / "mine.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "run"
    settings = demo.DemoSettings(data=str(path), target_col="y", n=0, n_train=8)
    first = _Stages(monkeypatch, fail_in="_optimize")
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(out, settings, log=None)
    assert first.ran == ["_write_target", "_finetune", "_fit_property"]
    state = json.loads((out / demo.MISSION_FILE).read_text())
    assert list(state["stages"]) == ["target", "finetune", "property_model"]

    second = _Stages(monkeypatch)
    lines: list[str] = []
    state = demo.run_demo(out, settings, log=lines.append)
    assert second.ran == ["_optimize", "_judge", "_report"]
    assert sum("done in an earlier run, kept" in line for line in lines) == 3
    assert list(state["stages"]) == ["target", "finetune", "property_model", "optimize", "candidates", "report"]

    before = (out / demo.MISSION_FILE).read_bytes()
    with pytest.raises(InputError, match=r"other settings \(budget\).*--overwrite"):
        demo.run_demo(out, settings, log=None, budget=500)
    assert (out / demo.MISSION_FILE).read_bytes() == before  # refused: nothing touched
    third = _Stages(monkeypatch)
    demo.run_demo(out, settings, log=None, budget=500, overwrite=True)
    assert third.ran == ["_write_target", "_finetune", "_fit_property", "_optimize", "_judge", "_report"]


def test_a_folder_with_other_files_is_not_taken_over(monkeypatch, tmp_path):
    (tmp_path / "optimize").mkdir()
    (tmp_path / "optimize" / "optimize.csv").write_text("step,oracle_call,smiles,score\n")
    _Stages(monkeypatch)
    with pytest.raises(InputError, match="already holds optimize but no mission.json"):
        demo.run_demo(tmp_path, data="chembl2321810", n=0, log=None)
    assert (tmp_path / "optimize" / "optimize.csv").is_file()


@pytest.mark.slow
def test_the_mission_end_to_end_on_a_users_csv(tmp_path):
    """Every stage for real, at toy sizes, on a user's CSV with a bad row: candidates, report, a kept rerun."""
    from molgen import datasets

    df = datasets.load("solubility").head(60)[["smiles", "logS"]]
    df.loc[len(df)] = ["C1CC", -2.0]  # unreadable: counted, not fatal
    path = tmp_path / "mine.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "run"
    state = demo.run_demo(out, data=str(path), target_col="logS", n=0, n_train=40, finetune_steps=4, budget=64,
                          eval_samples=40, candidates=10, n_jobs=1, progress=False, log=None)
    assert state["stages"]["target"]["skipped"]["unreadable_molecule"] == 1
    cands = pd.read_csv(out / "candidates.csv")
    assert list(cands.columns) == list(demo.CANDIDATE_COLUMNS) and 0 < len(cands) <= 10
    assert not set(cands["smiles"]) & set(pd.read_csv(out / "target" / "train.csv")["smiles"])
    assert (cands["score"].diff().dropna() <= 0).all()  # ranked
    assert state["stages"]["optimize"]["calls"] <= 64
    text = (out / "report.html").read_text()
    assert "The mission" in text and "Where guidance moved the molecules" in text and "Candidates" in text
    lines: list[str] = []
    demo.run_demo(out, data=str(path), target_col="logS", n=0, n_train=40, finetune_steps=4, budget=64,
                  eval_samples=40, candidates=10, n_jobs=1, progress=False, log=lines.append)
    assert sum("kept" in line for line in lines) == 6
