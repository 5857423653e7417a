"""Signing material for the provenance tests: one trusted chain, one the reader does not trust."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

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


def picture(fmt: str = "JPEG", size: tuple[int, int] = (96, 64), seed: int = 0) -> bytes:
    """Returns a textured image encoded in ``fmt``."""
    import numpy as np

    pixels = np.random.default_rng(seed).integers(
        0, 256, size=(size[1], size[0], 3), dtype=np.uint8
    )
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format=fmt)
    return buffer.getvalue()
