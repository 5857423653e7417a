"""``dfmod bank``: create, list, import, export and fill known-media banks; remove entries; set a
tenant's bank policy. Every change goes through :mod:`moderation.banks` in one transaction."""

from __future__ import annotations

import getpass
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
from sqlalchemy.orm import Session

from moderation.settings import load_settings

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _run(change: Callable[[Session], T]) -> T:
    """Returns ``change(session)`` in one transaction; refusals become a clear ClickException."""
    from moderation.db import cli_transaction

    return cli_transaction(load_settings().resolved_database_url, change)


def _operator(by: str | None) -> str:
    return by or f"cli:{getpass.getuser()}"


@click.group("bank")
def bank_group() -> None:
    """Manage known-media banks (PDQ hashes standing for a fake or real verdict)."""


@bank_group.command("create")
@click.argument("name")
@click.option("--verdict", type=click.Choice(["fake", "real"]), required=True)
@click.option("--tenant", default=None, help="Tenant name or id; default: shared by all tenants.")
def bank_create(name: str, verdict: str, tenant: str | None) -> None:
    """Create an empty bank."""
    from moderation.banks import create_bank

    bank = _run(lambda s: create_bank(session=s, name=name, verdict=verdict, tenant=tenant))
    click.echo(f"bank {bank.name} ({bank.verdict}, {bank.tenant_name or 'all tenants'}) created")


@bank_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def bank_list(as_json: bool) -> None:
    """List banks with their verdict, tenant and number of entries."""
    from moderation.banks import list_banks

    banks = _run(lambda s: list_banks(session=s))
    if as_json:
        rows = [
            {"name": b.name, "verdict": b.verdict, "tenant": b.tenant_name, "size": b.size}
            for b in banks
        ]
        click.echo(json.dumps(rows))
        return
    for b in banks:
        click.echo(f"{b.name}\t{b.verdict}\t{b.tenant_name or '(all tenants)'}\t{b.size}")


@bank_group.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", default=None, help="Where the hashes come from (default: file name).")
@click.option("--by", default=None, help="Who imports (default: cli:<user>).")
def bank_import(name: str, file: Path, source: str | None, by: str | None) -> None:
    """Import a CSV of PDQ hashes (HMA / ThreatExchange layout) into a bank."""
    from moderation.bank_csv import import_csv
    from moderation.banks import get_bank

    def change(s: Session) -> str:
        bank = get_bank(session=s, name=name)
        with file.open(newline="", encoding="utf-8", errors="replace") as handle:
            done = import_csv(
                session=s, bank=bank, handle=handle, source=source or file.name, by=_operator(by)
            )
        return (
            f"{done.added} hashes added to {bank.name}; {done.duplicates} already there, "
            f"{done.other_signals} rows of other signal types skipped"
        )

    click.echo(_run(change))


@bank_group.command("export")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, writable=True, path_type=Path))
def bank_export(name: str, file: Path) -> None:
    """Export a bank's PDQ entries as CSV ('-' writes to standard output)."""
    from moderation.bank_csv import export_csv
    from moderation.banks import get_bank

    def change(s: Session) -> int:
        bank = get_bank(session=s, name=name)
        if str(file) == "-":
            return export_csv(session=s, bank=bank, handle=sys.stdout)
        with file.open("w", newline="", encoding="utf-8") as handle:
            return export_csv(session=s, bank=bank, handle=handle)

    count = _run(change)
    click.echo(f"{count} hashes exported", err=True)


@bank_group.command("add")
@click.argument("name")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--note", default=None)
@click.option("--by", default=None, help="Who adds (default: cli:<user>).")
def bank_add(name: str, images: tuple[str, ...], note: str | None, by: str | None) -> None:
    """Hash image files with PDQ and add them to a bank."""
    from moderation.bank_models import EntrySource
    from moderation.banks import add_entry, get_bank
    from moderation.mediahash import bytes_pdq
    from moderation.preprocess import MediaRejected

    hashes = []
    for path in images:
        try:
            hashes.append((path, bytes_pdq(Path(path).read_bytes())))
        except MediaRejected as exc:
            raise click.ClickException(f"{path}: {exc.detail}; nothing added") from exc

    def change(s: Session) -> None:
        bank = get_bank(session=s, name=name)
        for path, pdq in hashes:
            entry = add_entry(
                session=s, bank_id=bank.id, media=pdq, source=EntrySource.FILE,
                import_source=Path(path).name, note=note, added_by=_operator(by),
            )  # fmt: skip
            click.echo(f"{path}\tentry {entry}\t{pdq.hex}\tquality {pdq.quality}")

    _run(change)


@bank_group.command("remove")
@click.argument("entry_id", type=int)
@click.option("--reason", required=True, help="Why (kept in the audit with who and when).")
@click.option("--by", default=None, help="Who removes (default: cli:<user>).")
def bank_remove(entry_id: int, reason: str, by: str | None) -> None:
    """Remove one bank entry (audited: who, when, why)."""
    from moderation.banks import remove_entry

    entry = _run(
        lambda s: remove_entry(session=s, entry_id=entry_id, by=_operator(by), reason=reason)
    )
    click.echo(f"entry {entry.id} removed by {entry.removed_by}")


@bank_group.command("policy")
@click.argument("tenant")
@click.option("--on-fake", type=click.Choice(["flag", "review", "ignore"]), default=None)
@click.option("--on-real", type=click.Choice(["pass", "review", "ignore"]), default=None)
@click.option("--auto-add/--no-auto-add", default=None, help="Review decisions fill the banks.")
def bank_policy(
    tenant: str, on_fake: str | None, on_real: str | None, auto_add: bool | None
) -> None:
    """Show or change what a tenant's bank matches do and whether decisions fill its banks."""
    from moderation.banks import set_policy

    policy = _run(
        lambda s: set_policy(
            session=s, tenant=tenant, on_fake=on_fake, on_real=on_real, auto_add=auto_add
        )
    )
    click.echo(f"on_fake={policy.on_fake} on_real={policy.on_real} auto_add={policy.auto_add}")
