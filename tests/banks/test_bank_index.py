"""Banks and the in-process index on SQLite and PostgreSQL: matches within the PDQ distance, in
step across processes' matchers after adds and removals, tenants kept apart, decisions filed."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from moderation import banks
from moderation.bank_index import BankMatcher
from moderation.db import session_scope
from moderation.mediahash import PdqHash, bytes_pdq, image_pdq
from moderation.models import Review, Status, Submission
from tests.fixtures.database import create_test_tenant
from tests.fixtures.media import jpeg, photo, reupload


def _hash(seed: int) -> PdqHash:
    return image_pdq(photo(seed))


def _flip(value: str, bits: int) -> str:
    number = int(value, 16)
    for bit in range(bits):
        number ^= 1 << (bit * 7)
    return f"{number:064x}"


def test_match_within_distance_and_removal(
    session_factory: sessionmaker[Session], tenant_id: str
) -> None:
    original = _hash(1)
    with session_scope(session_factory) as s:
        bank = banks.create_bank(session=s, name="shared-fake", verdict="fake")
        entry = banks.add_entry(
            session=s, bank_id=bank.id, media=original, source="import", import_source="t.csv"
        )
    matcher = BankMatcher(session_factory=session_factory)
    near = PdqHash(_flip(original.hex, 31), original.quality)
    far = PdqHash(_flip(original.hex, 32), original.quality)
    found = matcher.match(media=_media(near), tenant_id=tenant_id)
    assert found is not None and found.distance == 31 and found.verdict == "fake"
    assert found.to_json()["origin"] == {
        "source": "import",
        "import_source": "t.csv",
        "external_id": None,
        "added_by": None,
    }
    assert matcher.match(media=_media(far), tenant_id=tenant_id) is None
    with session_scope(session_factory) as s:
        removed = banks.remove_entry(session=s, entry_id=entry, by="ops", reason="wrong")
    assert removed.removed_by == "ops" and removed.removed_reason == "wrong"
    assert matcher.match(media=_media(original), tenant_id=tenant_id) is None


def _media(h: PdqHash):  # type: ignore[no-untyped-def]
    from moderation.mediahash import PDQ, MediaHash

    return MediaHash(PDQ, h)


def test_two_processes_stay_in_step(session_factory: sessionmaker[Session], tenant_id: str) -> None:
    first, second = (
        BankMatcher(session_factory=session_factory),
        BankMatcher(session_factory=session_factory),
    )
    assert first.match(media=_media(_hash(2)), tenant_id=tenant_id) is None
    with session_scope(session_factory) as s:
        bank = banks.create_bank(session=s, name="b", verdict="real")
        for seed in (2, 3):
            banks.add_entry(session=s, bank_id=bank.id, media=_hash(seed), source="file")
    for matcher in (first, second):
        assert matcher.match(media=_media(_hash(3)), tenant_id=tenant_id) is not None
    with session_scope(session_factory) as s:
        banks.add_entry(session=s, bank_id=bank.id, media=_hash(4), source="file")
    generation = first.generation
    assert first.match(media=_media(_hash(4)), tenant_id=tenant_id) is not None
    assert first.generation == generation + 1 and first.size == 3  # incremental, not rebuilt


def test_tenant_banks_are_private(
    session_factory: sessionmaker[Session], database_url: str
) -> None:
    owner, other = create_test_tenant(database_url)[0], create_test_tenant(database_url)[0]
    with session_scope(session_factory) as s:
        bank = banks.create_bank(session=s, name="own", verdict="fake", tenant=owner)
        banks.add_entry(session=s, bank_id=bank.id, media=_hash(5), source="file")
    matcher = BankMatcher(session_factory=session_factory)
    assert matcher.match(media=_media(_hash(5)), tenant_id=owner) is not None
    assert matcher.match(media=_media(_hash(5)), tenant_id=other) is None


def test_fake_bank_outranks_real(session_factory: sessionmaker[Session], tenant_id: str) -> None:
    h = _hash(6)
    with session_scope(session_factory) as s:
        real = banks.create_bank(session=s, name="r", verdict="real")
        fake = banks.create_bank(session=s, name="f", verdict="fake")
        banks.add_entry(session=s, bank_id=real.id, media=h, source="file")
        banks.add_entry(
            session=s, bank_id=fake.id, media=PdqHash(_flip(h.hex, 9), 100), source="file"
        )
    found = BankMatcher(session_factory=session_factory).match(media=_media(h), tenant_id=tenant_id)
    assert found is not None and found.bank == "f" and found.distance == 9


def test_flat_pictures_do_not_match(session_factory: sessionmaker[Session], tenant_id: str) -> None:
    from PIL import Image

    flat = image_pdq(Image.new("RGB", (64, 64), (120, 120, 120)))
    assert flat.quality < 50
    with session_scope(session_factory) as s:
        bank = banks.create_bank(session=s, name="flat", verdict="fake")
        banks.add_entry(session=s, bank_id=bank.id, media=flat, source="file")
    assert (
        BankMatcher(session_factory=session_factory).match(media=_media(flat), tenant_id=tenant_id)
        is None
    )


def test_bank_errors_say_what_was_expected(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        banks.create_bank(session=s, name="x", verdict="fake")
    with (
        pytest.raises(banks.BankError, match="one of fake, real"),
        session_scope(session_factory) as s,
    ):
        banks.create_bank(session=s, name="y", verdict="maybe")
    with (
        pytest.raises(banks.BankError, match="exists already"),
        session_scope(session_factory) as s,
    ):
        banks.create_bank(session=s, name="x", verdict="real")
    with (
        pytest.raises(banks.BankError, match="no bank 'z'; expected"),
        session_scope(session_factory) as s,
    ):
        banks.get_bank(session=s, name="z")


def _decided_submission(session_factory: sessionmaker[Session], tenant: str, h: PdqHash) -> str:
    from moderation.bank_models import MediaHashRow
    from moderation.models import new_id

    with session_scope(session_factory) as s:
        sub = Submission(
            id=new_id("sub"), tenant_id=tenant, media_kind="upload", status=Status.DECIDED
        )
        s.add(sub)
        s.flush()
        s.add(MediaHashRow(submission_id=sub.id, signal_type="pdq", pdq=h.hex, quality=h.quality))
        return sub.id


def test_decision_files_and_reversal_moves(
    session_factory: sessionmaker[Session], tenant_id: str
) -> None:
    h = _hash(7)
    submission = _decided_submission(session_factory, tenant_id, h)
    matcher = BankMatcher(session_factory=session_factory)
    with session_scope(session_factory) as s:
        s.add(Review(id="rev_1", submission_id=submission, reviewer="alice", label="fake"))
        banks.record_decision(
            session=s, submission_id=submission, label="fake", reviewer="alice", review_id="rev_1"
        )
    found = matcher.match(media=_media(h), tenant_id=tenant_id)
    assert found is not None and found.verdict == "fake" and found.bank.endswith("-fake")
    assert found.to_json()["origin"]["submission"] == submission
    with session_scope(session_factory) as s:
        banks.record_decision(
            session=s, submission_id=submission, label="real", reviewer="bob", review_id="rev_2"
        )
        removed = banks.recent_entries(session=s, bank_id=found.bank_id, removed=True)
    assert removed[0].removed_by == "bob" and "reversed to real" in (
        removed[0].removed_reason or ""
    )
    again = matcher.match(media=_media(h), tenant_id=tenant_id)
    assert again is not None and again.verdict == "real"


def test_auto_add_off_files_nothing(session_factory: sessionmaker[Session], tenant_id: str) -> None:
    submission = _decided_submission(session_factory, tenant_id, _hash(8))
    with session_scope(session_factory) as s:
        banks.set_policy(session=s, tenant=tenant_id, auto_add=False)
        assert (
            banks.record_decision(
                session=s, submission_id=submission, label="fake", reviewer="a", review_id="r"
            )
            is None
        )


def test_reupload_stays_within_distance() -> None:
    for seed in range(3):
        image = photo(seed + 20)
        original = bytes_pdq(jpeg(image, 95))
        copy = bytes_pdq(reupload(image, quality=60, scale=0.7))
        assert original.quality >= 50
        assert int(bin(int(original.hex, 16) ^ int(copy.hex, 16)).count("1")) <= 31
    assert np is not None


def test_decision_bank_name_taken_by_another_bank(
    session_factory: sessionmaker[Session], database_url: str
) -> None:
    from moderation.models import Tenant

    tenant = create_test_tenant(database_url, name="acme")[0]
    with session_scope(session_factory) as s:
        banks.create_bank(session=s, name="acme-fake", verdict="real")  # shared, same name
    submission = _decided_submission(session_factory, tenant, _hash(9))
    with session_scope(session_factory) as s:
        banks.record_decision(
            session=s, submission_id=submission, label="fake", reviewer="a", review_id="r"
        )
        names = {b.name: b for b in banks.list_banks(session=s)}
        assert s.get(Tenant, tenant) is not None
    own = names[f"acme-fake-{tenant}"]
    assert own.verdict == "fake" and own.tenant_id == tenant and own.size == 1
