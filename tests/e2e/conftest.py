"""End-to-end stacks, started once per test module: embedded (SQLite) and PostgreSQL + Redis."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image

from tests.fixtures.stack import STACK_FLAVOURS, Stack, flavoured_stack, free_port, triton_env

# Small limits so the too_large cases need little data.
E2E_ENV = {
    "DFMOD_MAX_UPLOAD_BYTES": str(2_000_000),
    "DFMOD_MAX_IMAGE_PIXELS": str(1_000_000),
    "DFMOD_CALLBACK_TIMEOUT_S": "3",
    "DFMOD_FETCH_TIMEOUT_S": "5",
    "DFMOD_SWEEP_INTERVAL_S": "3",
    "DFMOD_STUCK_AFTER_S": "20",
}


@pytest.fixture(scope="module", params=STACK_FLAVOURS)
def stack(
    request: pytest.FixtureRequest, triton_server: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The API and a worker (with sweeper) on the real Triton, for each flavour."""
    root = tmp_path_factory.mktemp(f"stack-{request.param}")
    env = {**triton_env(triton_server), **E2E_ENV, "DFMOD_WORKER_METRICS_PORT": str(free_port())}
    with flavoured_stack(request, root, env) as started:
        yield started


def image_bytes(size: tuple[int, int] = (96, 64), *, fmt: str = "PNG", seed: int = 0) -> bytes:
    """Returns a real image with some texture (so truncating it really breaks it)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def flat_image(size: tuple[int, int], *, fmt: str = "PNG") -> bytes:
    """Returns a one-colour image: many pixels, few bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, format=fmt)
    return buffer.getvalue()
