"""A subset of the bad-media corpus through the real API, worker and Triton.

Each upload ends in a 4xx answer or a submission that is scored or ``failed`` with a known reason;
afterwards the API and worker processes are alive, ``/healthz`` answers, and the worker's resident
memory (the whole process tree, read from /proc) grew by less than a generous bound.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moderation.preprocess import REASONS
from tests.fixtures.stack import FINAL, Stack, embedded_stack, triton_env
from tests.reliability.input_corpus import ARRAY, Case, build_corpus

pytestmark = pytest.mark.integration

ENV = {"DFMOD_MAX_UPLOAD_BYTES": str(1_000_000), "DFMOD_MAX_IMAGE_PIXELS": str(4_000_000)}
# Bounded: ~30 uploads picked from every category of the corpus, the same ones on every run.
SUBSET_PER_PREFIX = {
    "valid": 3,
    "bomb": 6,
    "foreign": 6,
    "polyglot": 3,
    "mislabelled": 2,
    "truncated": 5,
    "flipped": 3,
    "magic": 2,
    "zero": 1,
}
RSS_GROWTH_LIMIT_KB = 300 * 1024


def subset() -> list[Case]:
    chosen: list[Case] = []
    for prefix, count in SUBSET_PER_PREFIX.items():
        group = [c for c in build_corpus() if c.name.split("_")[0] == prefix]
        step = max(1, len(group) // count)
        chosen += group[::step][:count]
    return chosen


def tree_rss_kb(pid: int) -> int:
    """Returns the resident memory (kB) of a process and all its descendants, from /proc."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(
                next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
            )
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total


@pytest.fixture(scope="module")
def stack(triton_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = embedded_stack(
        tmp_path_factory.mktemp("input-stack"), {**triton_env(triton_server), **ENV}
    )
    with started:
        yield started


def _submit(stack: Stack, key: str, case: Case):  # type: ignore[no-untyped-def]
    return stack.http.post(
        f"{stack.api_url}/v1/submissions",
        files={"file": (case.filename, case.data, case.content_type or "application/octet-stream")},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def _wait(stack: Stack, key: str, ids: dict[str, Case], timeout_s: float) -> dict[str, dict]:
    deadline, done = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline and len(done) < len(ids):
        for submission_id in [i for i in ids if i not in done]:
            body = stack.get(key, submission_id).json()
            if body["status"] in FINAL:
                done[submission_id] = body
        time.sleep(0.3)
    missing = [ids[i].name for i in ids if i not in done]
    assert not missing, f"not final after {timeout_s}s: {missing}\n{stack.log_tail()}"
    return done


def _judge(case: Case, body: dict) -> str | None:
    failure = body.get("failure") or {}
    outcome = failure.get("reason") if body["status"] == "failed" else ARRAY
    if body["status"] == "failed" and (outcome not in REASONS or not failure.get("detail")):
        return f"{case.name}: failed without a known reason: {failure}"
    if case.expect == ARRAY and outcome != ARRAY:
        return f"{case.name}: expected a score, got {body['status']} {failure}"
    if isinstance(case.expect, frozenset) and outcome not in case.expect:
        return f"{case.name}: expected {sorted(case.expect)}, got {body['status']} {failure}"
    return None


def test_bad_media_through_the_stack(stack: Stack) -> None:
    key = stack.tenant().api_key
    worker_pid = stack.procs["worker"].pid
    # Warm the worker (imports, Triton channel) so the memory baseline is not the cold start.
    warm = next(c for c in build_corpus() if c.name == "valid_png_rgb")
    _wait(stack, key, {_submit(stack, key, warm).json()["id"]: warm}, 60)
    rss_before = tree_rss_kb(worker_pid)
    cases = subset()
    assert len(cases) >= 25
    accepted: dict[str, Case] = {}
    for case in cases:
        response = _submit(stack, key, case)
        if response.status_code == 202:
            accepted[response.json()["id"]] = case
        else:
            assert 400 <= response.status_code < 500, (case.name, response.text)
            assert response.headers["Content-Type"].startswith("application/problem+json")
    oversize = Case("oversize", b"\xff\xd8\xff" + b"\x00" * 1_100_000, None)
    assert _submit(stack, key, oversize).status_code == 413
    done = _wait(stack, key, accepted, 120)
    wrong = [w for i, b in done.items() if (w := _judge(accepted[i], b))]
    assert not wrong, "\n".join(wrong)
    assert sum(b["status"] == "failed" for b in done.values()) >= 10
    for name, proc in stack.procs.items():
        assert proc.poll() is None, f"{name} exited\n{stack.log_tail()}"
    assert stack.http.get(f"{stack.api_url}/healthz", timeout=5).ok
    rss_after = tree_rss_kb(worker_pid)
    print(f"worker tree RSS: {rss_before} kB before, {rss_after} kB after {len(cases)} uploads")
    assert rss_before > 0 and rss_after - rss_before < RSS_GROWTH_LIMIT_KB
