"""``dfmod bank``: create, add image files, import/export CSV (HMA / ThreatExchange layout),
list, remove (audited) and the tenant policy, against a migrated SQLite file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from click.testing import CliRunner

from moderation.cli import main
from moderation.mediahash import bytes_pdq
from tests.fixtures.media import jpeg, photo


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "DFMOD_DATA_DIR": str(tmp_path / "var"),
        "DFMOD_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
    }


def _ok(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_bank_lifecycle(tmp_path: Path) -> None:
    env = _env(tmp_path)
    _ok(env, "migrate")
    _ok(env, "tenant", "create", "acme")
    assert "created" in _ok(
        env, "bank", "create", "acme-fake", "--verdict", "fake", "--tenant", "acme"
    )
    _ok(env, "bank", "create", "shared", "--verdict", "real")
    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg(photo(1)))
    added = _ok(env, "bank", "add", "acme-fake", str(image), "--by", "ops")
    assert bytes_pdq(image.read_bytes()).hex in added

    other = bytes_pdq(jpeg(photo(2))).hex
    source = tmp_path / "te.csv"
    source.write_text(
        "signal_type,signal_value,quality,indicator_id,tags\n"
        f"pdq,{other},90,123,campaign-x\n"
        "vpdq,whatever,,124,\n"
        f"pdq,{other.upper()},90,125,\n"
    )
    out = _ok(env, "bank", "import", "acme-fake", str(source))
    assert "1 hashes added" in out and "1 already there" in out and "1 rows of other" in out

    listed = json.loads(_ok(env, "bank", "list", "--json"))
    assert {b["name"]: (b["size"], b["tenant"]) for b in listed} == {
        "acme-fake": (2, "acme"),
        "shared": (0, None),
    }
    exported = tmp_path / "out.csv"
    _ok(env, "bank", "export", "acme-fake", str(exported))
    rows = list(csv.DictReader(exported.open()))
    assert [r["signal_value"] for r in rows][1] == other
    assert rows[1]["external_id"] == "123" and rows[1]["note"] == "campaign-x"
    assert rows[0]["source"] == "file" and rows[0]["added_by"] == "ops"

    headerless = tmp_path / "plain.csv"
    headerless.write_text(f"{other}\n")
    _ok(env, "bank", "import", "shared", str(headerless))
    out = _ok(
        env, "bank", "remove", rows[0]["entry_id"], "--reason", "false positive", "--by", "ann"
    )
    assert "removed by ann" in out
    again = CliRunner().invoke(
        main, ["bank", "remove", rows[0]["entry_id"], "--reason", "x"], env=env
    )
    assert again.exit_code != 0 and "no active bank entry" in again.output
    assert "on_fake=review" in _ok(env, "bank", "policy", "acme", "--on-fake", "review")


def test_bad_input_is_refused_whole(tmp_path: Path) -> None:
    env = _env(tmp_path)
    _ok(env, "migrate")
    _ok(env, "bank", "create", "b", "--verdict", "fake")
    bad = tmp_path / "bad.csv"
    bad.write_text("pdq\n" + "0" * 64 + "\nnot-a-hash\n")
    result = CliRunner().invoke(main, ["bank", "import", "b", str(bad)], env=env)
    assert result.exit_code != 0
    assert "line 3" in result.output and "expected 64 hexadecimal" in result.output
    assert json.loads(_ok(env, "bank", "list", "--json"))[0]["size"] == 0
    wrong = CliRunner().invoke(main, ["bank", "create", "c", "--verdict", "maybe"], env=env)
    assert wrong.exit_code != 0 and "fake" in wrong.output
    missing = CliRunner().invoke(main, ["bank", "import", "nope", str(bad)], env=env)
    assert missing.exit_code != 0 and "no bank 'nope'; expected one of: b" in missing.output
    text = tmp_path / "x.jpg"
    text.write_text("hello")
    notimage = CliRunner().invoke(main, ["bank", "add", "b", str(text)], env=env)
    assert notimage.exit_code != 0 and "nothing added" in notimage.output
