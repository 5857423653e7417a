"""Signing material for the provenance tests: one trusted chain, one the reader does not trust."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.provenance.signing import Chain, make_chain


@pytest.fixture(scope="session")
def chain() -> Chain:
    """A generator's signing chain whose root the tests configure as a trust anchor."""
    return make_chain("Test Generator", "dfmod tests")


@pytest.fixture(scope="session")
def stranger() -> Chain:
    """A chain nobody configured: its signatures hold, its signer is untrusted."""
    return make_chain("Someone Else", "unknown issuer")


@pytest.fixture(scope="session")
def anchors_file(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PEM file holding the trusted root, as DFMOD_C2PA_TRUST_ANCHORS names it."""
    path = tmp_path_factory.mktemp("c2pa") / "anchors.pem"
    path.write_bytes(chain.anchor_pem)
    return path
