"""End-to-end stacks, started once per test module: embedded (SQLite) and PostgreSQL + Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.stack import (
    E2E_ENV,
    STACK_FLAVOURS,
    Stack,
    flavoured_stack,
    free_port,
    triton_env,
)


@pytest.fixture(scope="module", params=STACK_FLAVOURS)
def stack(
    request: pytest.FixtureRequest, triton_server: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The API and a worker (with sweeper) on the real Triton, for each flavour."""
    root = tmp_path_factory.mktemp(f"stack-{request.param}")
    env = {**triton_env(triton_server), **E2E_ENV, "DFMOD_WORKER_METRICS_PORT": str(free_port())}
    with flavoured_stack(request, root, env) as started:
        yield started
