"""Scale-out on one machine, started the way docker-compose.yml starts it, one worker SIGKILLed.

The processes are the compose file's own: its ``migrate``, ``api`` (two gunicorn processes),
two ``worker`` replicas (prefork, each with its own Celery node name from ``--hostname``) and
``beat`` commands, with its ``x-dfmod-env`` variables; only the addresses change (this test's
PostgreSQL database, Redis index and the session's Triton, which serves the repository's two model
instances). The figure of two workers against one is printed (the worker pool's throughput on
this host; docs/performance.md keeps it beside the machine's load). Then, under load, one worker
is SIGKILLed: the other carries on, every submission ends once, each with one callback.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from moderation.settings import PROJECT_ROOT
from tests.fixtures.processes import kill_holding
from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import (
    Stack,
    assert_exactly_once,
    submit_stream,
    triton_env,
    wait_all_final,
    wait_callbacks_for,
    wait_worker_ready,
    webhook_ids_by_submission,
)

pytestmark = pytest.mark.integration

PER_PHASE = 48
CLIENTS = 4
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


def _interpolate(value: Any) -> str:
    return _VAR.sub(lambda m: m.group(2) or "", str(value))


def _compose() -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def compose_env(services: dict[str, Any], service: str) -> dict[str, str]:
    """Returns a service's DFMOD_* environment as compose would give it (defaults interpolated)."""
    return {k: _interpolate(v) for k, v in (services[service].get("environment") or {}).items()}


def compose_args(services: dict[str, Any], service: str, node: str | None = None) -> list[str]:
    """Returns a service's ``dfmod`` arguments; ``node`` names a worker replica (compose gives
    each container its own host name, which ``%h`` expands to; here they share one host)."""
    args = [str(a) for a in services[service]["command"]]
    if node is not None and "--hostname" in args:
        args[args.index("--hostname") + 1] = f"{node}@%h"
    return args


@pytest.fixture()
def stack(
    triton_server: object,
    postgres_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Stack, dict[str, Any]]]:
    services = _compose()["services"]
    env = {**compose_env(services, "worker"), **compose_env(services, "api")}
    for local in ("DFMOD_DATABASE_URL", "DFMOD_BROKER_URL", "DFMOD_DATA_DIR", "DFMOD_API_HOST"):
        env.pop(local)  # this machine's addresses (the Stack's), not the containers'
    env.pop("DFMOD_API_PORT")
    env.update(triton_env(triton_server))
    env["DFMOD_OUTBOUND_ALLOWLIST"] = "127.0.0.0/8"  # the callback receiver is on loopback
    root = tmp_path_factory.mktemp("scaleout")
    made = Stack(
        name="compose-shaped",
        root=root,
        database_url=postgres_url,
        broker_url=redis_url,
        env=env,
        worker_args=tuple(compose_args(services, "worker", "worker1"))[1:],
    )
    with made as started:
        started._spawn("beat", *compose_args(services, "beat"))
        wait_worker_ready(started)
        yield started, services


def _rate(stack: Stack, key: str, url: str, first_seed: int) -> tuple[list[str], float]:
    """Submits PER_PHASE images from CLIENTS clients; returns (ids, scorings a second)."""
    started = time.monotonic()
    per_client = PER_PHASE // CLIENTS
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        streams = [
            pool.submit(submit_stream, stack, key, per_client, url, first_seed=first_seed + n * 100)
            for n in range(CLIENTS)
        ]
        ids = [i for s in streams for i in s.result(timeout=300)]
    wait_all_final(stack, key, ids, timeout_s=300)
    return ids, len(ids) / (time.monotonic() - started)


def test_two_workers_one_sigkilled_under_load__every_item_ends_once(
    stack: tuple[Stack, dict[str, Any]], callback_receiver: CallbackReceiver
) -> None:
    started, services = stack
    tenant = started.tenant()
    callback_receiver.secret = tenant.secret
    url = callback_receiver.url()
    one_ids, one = _rate(started, tenant.api_key, url, 10_000)
    started._spawn("worker2", *compose_args(services, "worker", "worker2"))
    wait_worker_ready(started, log="worker2.log")
    two_ids, two = _rate(started, tenant.api_key, url, 20_000)
    nodes = re.findall(r"(worker\d)@\S+ ready\.", (started.root / "worker.log").read_text())
    nodes += re.findall(r"(worker\d)@\S+ ready\.", (started.root / "worker2.log").read_text())
    assert sorted(set(nodes)) == ["worker1", "worker2"]

    per_client = PER_PHASE // CLIENTS
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        streams = [
            pool.submit(submit_stream, started, tenant.api_key, per_client, url, first_seed=s)
            for s in range(30_000, 30_000 + CLIENTS * 100, 100)
        ]
        callback_receiver.wait_for(len(one_ids) + len(two_ids) + 8, timeout_s=120)
        victim = started.procs.pop("worker")
        kill_holding(started, victim.pid)  # the kill lands on work in flight
        victim.wait(timeout=10)
        killed_at = time.monotonic()
        load_ids = [i for s in streams for i in s.result(timeout=300)]
    ids = one_ids + two_ids + load_ids
    finals = wait_all_final(started, tenant.api_key, ids, timeout_s=300)
    recovered_s = time.monotonic() - killed_at
    assert {b["status"] for b in finals.values()} <= {"auto_passed", "auto_flagged", "needs_review"}
    assert_exactly_once(started, ids, with_callbacks=True)
    wait_callbacks_for(callback_receiver, ids, timeout_s=180)
    seen = webhook_ids_by_submission(callback_receiver)
    assert set(seen) == set(ids) and all(len(w) == 1 for w in seen.values())
    print(
        f"\nscale-out (compose-shaped, {CLIENTS} clients, {PER_PHASE} each phase): 1 worker "
        f"{one:.1f}/s, 2 workers {two:.1f}/s, ratio {two / one:.2f}; after the SIGKILL of "
        f"worker1 all {len(ids)} ended once, the last {recovered_s:.1f}s after the kill"
    )
