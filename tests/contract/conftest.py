"""The stack the contract tests run against: the real API (gunicorn) and worker on Triton."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.stack import Stack, embedded_stack, triton_env

CONTRACT_ENV = {
    "DFMOD_MAX_UPLOAD_BYTES": str(256 * 1024),
    "DFMOD_RATE_LIMIT_PER_MINUTE": "0",  # the fuzzer sends thousands of submissions
    "DFMOD_API_WORKERS": "1",
}


@pytest.fixture(scope="module")
def stack(triton_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("contract-stack")
    with embedded_stack(root, {**triton_env(triton_server), **CONTRACT_ENV}) as started:
        yield started
