"""README's quickstarts run as written (the Python block executed, the CLI commands' names real)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(lang: str, after: str) -> str:
    text = README.read_text()
    start = text.index(f"```{lang}\n", text.index(after)) + len(lang) + 4
    return text[start:text.index("```", start)]


@pytest.mark.slow
def test_the_python_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_block("python", "## Python quickstart"), "README quickstart", "exec"), scope)
    scored = scope["scored"]
    assert len(scored) == 1000 and {"qed", "sa", "mean", "std"} <= set(scored.columns)
    assert scored.loc[scored["valid"], "mean"].notna().mean() > 0.9  # predictions line up with their molecules


def test_the_cli_quickstart_names_real_commands_and_configs():
    from typer.main import get_command

    from molgen.cli import app

    commands = set(get_command(app).commands)
    for line in _block("bash", "## Command-line quickstart").splitlines():
        words = line.split("#")[0].split()
        assert words[0] == "molgen" and words[1] in commands, line
        for path in re.findall(r"scripts/configs/\S+\.toml", line):
            assert (README.parent / path).is_file(), path


def test_the_api_page_is_current_and_every_name_on_it_resolves_from_mg():
    import importlib.util

    import molgen as mg

    spec = importlib.util.spec_from_file_location("make_api_doc", README.parent / "scripts" / "make_api_doc.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    assert maker.PAGE.read_text() == maker.render(), "docs/api.md is stale: python scripts/make_api_doc.py"
    for _, names in maker.API:
        for dotted in names:
            obj = mg
            for attr in dotted.split(".")[1:]:
                obj = getattr(obj, attr)  # the way a notebook reaches it: mg.transfer.PropertyModel ...
            assert callable(obj), dotted
