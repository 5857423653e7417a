"""The README's promises that code can check: the settings table and the two commands."""

from __future__ import annotations

from pathlib import Path

from moderation.settings import settings_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_settings_table_is_the_generated_one() -> None:
    assert settings_table() in README, "README settings table is stale: paste `dfmod settings`"


def test_readme_commands_are_what_ci_runs() -> None:
    assert "bash scripts/test" in README
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/dfmod up" in README


def test_readme_walk_through_uses_the_client() -> None:
    assert "from moderation.client import Client" in README
    assert "verify_webhook(" in README
