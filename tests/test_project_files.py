"""The README's two set-up commands, .ci/run and the packaging stay consistent."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:sh|bash|console)\n(.*?)\n```", setup, flags=re.S)


def test_readme_has_exactly_two_setup_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    run, test = commands
    assert "islet-cds serve" in run and "pip install" in run
    assert "pytest" in test and "pip install" in test


def test_ci_runs_the_readme_test_command() -> None:
    test_command = readme_commands()[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci


def test_console_script_and_packages() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["islet-cds"] == "service.cli:main"
    assert project["requires-python"] == ">=3.11"
    assert all(">=" in dep for dep in project["dependencies"])


def test_readme_documents_every_setting() -> None:
    from dataclasses import fields

    from service.config import Settings

    readme = (ROOT / "README.md").read_text()
    missing = [f"ISLET_CDS_{f.name.upper()}" for f in fields(Settings) if f"ISLET_CDS_{f.name.upper()}" not in readme]
    assert missing == []
