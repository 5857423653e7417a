"""``dfmod up`` as a user runs it: first run prints a demo key, the curl works, Ctrl-C stops all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from moderation.settings import PROJECT_ROOT
from tests.fixtures.media import image_bytes
from tests.fixtures.stack import FINAL, free_port

pytestmark = pytest.mark.integration

BANNER_TIMEOUT_S = 180.0


def _start_up(data_dir: Path, ports: dict[str, int], log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DFMOD_DATA_DIR": str(data_dir),
        "DFMOD_API_PORT": str(ports["api"]),
        "DFMOD_TRITON_GRPC_PORT": str(ports["grpc"]),
        "DFMOD_TRITON_HTTP_PORT": str(ports["http"]),
        "DFMOD_TRITON_METRICS_PORT": str(ports["metrics"]),
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DFMOD_DATABASE_URL", "DFMOD_BROKER_URL"):
        env.pop(name, None)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "moderation.cli", "up", "--concurrency", "2"],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_banner(proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + BANNER_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "Try it:" in text:
            return text
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"dfmod up printed no banner:\n{log.read_text(errors='replace')[-4000:]}")


def _descendants(pid: int) -> list[int]:
    """Returns the ids of every process below ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _stop(proc: subprocess.Popen[bytes]) -> tuple[int, list[int]]:
    """Sends Ctrl-C (SIGINT) to dfmod up; returns its exit code and any child still running."""
    children = _descendants(proc.pid)
    assert children, "dfmod up started no children"
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=60)
    deadline = time.monotonic() + 10
    while any(_running(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    return code, [c for c in children if _running(c)]


def test_dfmod_up__demo_tenant_curl_and_clean_stop(tmp_path: Path) -> None:
    ports = {"api": free_port(), "grpc": free_port(), "http": free_port(), "metrics": free_port()}
    data_dir, log = tmp_path / "var", tmp_path / "up.log"
    proc = _start_up(data_dir, ports, log)
    try:
        banner = _wait_banner(proc, log)
        key = re.search(r"API key:\s+(\S+)", banner)
        assert key is not None and "webhook secret:" in banner and "curl" in banner
        headers = {"Authorization": f"Bearer {key.group(1)}"}
        base = f"http://127.0.0.1:{ports['api']}/v1/submissions"
        files = {"file": ("photo.png", image_bytes(seed=11))}
        submission = requests.post(base, files=files, headers=headers, timeout=30).json()
        deadline, status = time.monotonic() + 60, submission["status"]
        while status not in FINAL and time.monotonic() < deadline:
            time.sleep(0.2)
            status = requests.get(f"{base}/{submission['id']}", headers=headers, timeout=10).json()[
                "status"
            ]
        assert status in {"auto_passed", "auto_flagged", "needs_review"}
    finally:
        code, alive = _stop(proc)
    assert code == 0 and alive == [], log.read_text(errors="replace")[-3000:]
    assert (data_dir / "dfmod.db").is_file() and (data_dir / "broker.db").is_file()
    # Second run: the demo tenant exists, no new key is printed.
    proc = _start_up(data_dir, ports, log)
    try:
        assert "API key:" not in _wait_banner(proc, log)
    finally:
        code, alive = _stop(proc)
    assert code == 0 and alive == []
