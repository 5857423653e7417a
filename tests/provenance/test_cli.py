"""``dfmod tenant set-provenance-policy``: sets, clears and refuses, with what was expected."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from moderation.cli import main
from moderation.db import make_engine, make_session_factory, session_scope
from moderation.models import Tenant


def _policy(url: str, name: str) -> str | None:
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return session.scalar(select(Tenant.provenance_policy).where(Tenant.name == name))
    finally:
        engine.dispose()


def test_set_provenance_policy_sets_clears_and_refuses(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dfmod.db'}"
    env = {"DFMOD_DATABASE_URL": url, "DFMOD_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    assert runner.invoke(main, ["migrate"], env=env).exit_code == 0
    assert runner.invoke(main, ["tenant", "create", "acme"], env=env).exit_code == 0
    command = ["tenant", "set-provenance-policy"]

    result = runner.invoke(main, [*command, "acme", "--policy", "signed"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "acme: signed" and _policy(url, "acme") == "signed"
    cleared = runner.invoke(
        main, [*command, "acme", "--default"], env={**env, "DFMOD_PROVENANCE_POLICY": "off"}
    )
    assert cleared.exit_code == 0, cleared.output
    assert "global default (DFMOD_PROVENANCE_POLICY, now off)" in cleared.output
    assert _policy(url, "acme") is None

    runner.invoke(main, [*command, "acme", "--policy", "off"], env=env)
    refusals = {
        "unknown policy": ["acme", "--policy", "always"],
        "unknown tenant": ["nobody", "--policy", "off"],
        "neither": ["acme"],
        "both": ["acme", "--policy", "off", "--default"],
    }
    outputs = {}
    for case, args in refusals.items():
        refused = runner.invoke(main, [*command, *args], env=env)
        assert refused.exit_code != 0, case
        outputs[case] = refused.output
    assert "'always' is not one of 'trusted', 'signed', 'off'" in outputs["unknown policy"]
    assert "no tenant named 'nobody'" in outputs["unknown tenant"]
    assert "expected exactly one of --policy trusted|signed|off or --default" in outputs["both"]
    assert "expected exactly one of" in outputs["neither"]
    assert _policy(url, "acme") == "off"  # no refusal changed the stored policy


def test_worker_refuses_an_unknown_global_policy(tmp_path: Path) -> None:
    env = {"DFMOD_DATA_DIR": str(tmp_path), "DFMOD_PROVENANCE_POLICY": "always"}
    refused = CliRunner().invoke(main, ["worker"], env=env)
    assert refused.exit_code == 2
    wanted = "DFMOD_PROVENANCE_POLICY='always'; expected one of trusted, signed, off"
    assert wanted in refused.output
