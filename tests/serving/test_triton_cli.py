"""``dfmod triton``: starts on the configured ports, stops on SIGTERM, explains what is wrong."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moderation.settings import PROJECT_ROOT
from serving.client import TritonClient
from serving.env import TritonStartError, free_ports, port_in_use
from serving.server import TritonServer, load_model
from tests.fixtures.triton import copy_repository


def _dfmod(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "moderation.cli", "triton", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_line(process: subprocess.Popen[str], text: str, timeout_s: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} not printed within {timeout_s} s:\n{''.join(lines)}")


@pytest.mark.integration
def test_dfmod_triton_serves_on_env_ports_and_stops_on_sigterm(tmp_path: Path) -> None:
    repository = copy_repository(PROJECT_ROOT / "model_repository", tmp_path / "repo")
    grpc_port, http_port, metrics_port = free_ports(3)
    env = {
        "DFMOD_TRITON_GRPC_PORT": str(grpc_port),
        "DFMOD_TRITON_METRICS_PORT": str(metrics_port),
        "DFMOD_DATA_DIR": str(tmp_path / "var"),
        "DFMOD_MODEL_REPOSITORY": str(repository),
    }
    process = _dfmod("--http-port", str(http_port), env=env)
    try:
        _wait_for_line(process, "Triton serving deepfake_detector", timeout_s=180)
        client = TritonClient(f"127.0.0.1:{grpc_port}")
        assert client.is_ready()
        client.close()
        assert port_in_use("127.0.0.1", http_port) and port_in_use("127.0.0.1", metrics_port)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not port_in_use("127.0.0.1", grpc_port)
    assert (tmp_path / "var" / "triton" / "tritonserver.log").exists()


def test_missing_model_is_explained(tmp_path: Path) -> None:
    (tmp_path / "deepfake_detector").mkdir()
    (tmp_path / "deepfake_detector" / "config.pbtxt").write_text('name: "deepfake_detector"\n')
    server = TritonServer(repository=tmp_path, work_dir=tmp_path / "work")
    with pytest.raises(TritonStartError, match=r"no version folder with model.onnx"):
        server.start()
    with pytest.raises(TritonStartError, match=r"expected the model configuration"):
        TritonServer(repository=tmp_path / "nothing").start()


def test_busy_port_is_explained(tmp_path: Path) -> None:
    repository = copy_repository(PROJECT_ROOT / "model_repository", tmp_path / "repo")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        grpc_port, metrics_port = free_ports(2)
        server = TritonServer(
            repository=repository, grpc_port=grpc_port, http_port=port, metrics_port=metrics_port
        )
        with pytest.raises(TritonStartError, match=rf"HTTP port {port} is already in use"):
            server.start()


def test_cli_reports_start_errors_without_traceback(tmp_path: Path) -> None:
    grpc_port, http_port, metrics_port = free_ports(3)
    env = {"DFMOD_MODEL_REPOSITORY": str(tmp_path), "DFMOD_DATA_DIR": str(tmp_path / "var")}
    ports = ["--grpc-port", str(grpc_port), "--http-port", str(http_port)]
    process = _dfmod(*ports, "--metrics-port", str(metrics_port), env=env)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "Error: expected the model configuration" in output
    assert "Traceback" not in output


def test_load_errors_are_told_in_words(triton_server: TritonServer) -> None:
    with pytest.raises(TritonStartError) as refused:
        load_model(http_url=triton_server.http_url, model_name="no_such_model")
    message = str(refused.value)
    assert message.startswith(f"Triton at {triton_server.http_url} refused to load no_such_model: ")
    assert "no_such_model" in message.split(": ", 1)[1]  # Triton's own reason follows
    (closed,) = free_ports(1)
    with pytest.raises(TritonStartError) as unreachable:
        load_model(http_url=f"http://127.0.0.1:{closed}")
    message = str(unreachable.value)
    assert message.startswith(f"cannot reach Triton at http://127.0.0.1:{closed} to load ")
    for text in (str(refused.value), message):
        assert "Exception" not in text and " object at 0x" not in text
