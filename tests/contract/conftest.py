"""The stacks the contract tests run against: the real API (gunicorn) and worker on Triton, on
SQLite with the SQLite broker and on PostgreSQL with Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.stack import STACK_FLAVOURS, Stack, flavoured_stack, triton_env

CONTRACT_ENV = {
    "DFMOD_MAX_UPLOAD_BYTES": str(256 * 1024),
    "DFMOD_RATE_LIMIT_PER_MINUTE": "0",  # the fuzzer sends thousands of submissions
    "DFMOD_API_WORKERS": "1",
}


@pytest.fixture(scope="module", params=STACK_FLAVOURS)
def stack(
    request: pytest.FixtureRequest, triton_server: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp(f"contract-{request.param}")
    env = {**triton_env(triton_server), **CONTRACT_ENV}
    with flavoured_stack(request, root, env) as started:
        yield started
