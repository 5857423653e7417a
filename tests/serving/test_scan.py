"""``dfmod scan`` scores files through the real Triton with the answering version's calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from moderation.contract import ModelMetadata
from moderation.policy import calibrate, decide
from moderation.settings import load_settings
from serving.client import TritonClient
from serving.env import free_ports
from serving.server import TritonServer
from worker.scan import scan_command, scan_files

pytestmark = pytest.mark.integration


@pytest.fixture()
def files(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(5)
    photo, drawing = tmp_path / "photo.jpg", tmp_path / "drawing.png"
    Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)).save(photo)
    Image.new("P", (50, 80), 3).save(drawing)
    page = tmp_path / "page.jpg"
    page.write_bytes(b"<!doctype html><p>not an image</p>")
    return [photo, page, drawing]


def test_scan_files_reports_verdicts_and_refusals(triton_server: TritonServer, files) -> None:
    settings = load_settings({}, model_repository=triton_server.repository)
    client = TritonClient(triton_server.grpc_url)
    lines = scan_files(files, client=client, settings=settings)
    client.close()
    assert [line.file for line in lines] == [str(f) for f in files]
    assert lines[1].verdict == "rejected" and lines[1].reason == "unsupported_media"
    for line in (lines[0], lines[2]):
        assert line.logit is not None and line.p_fake is not None
        meta = ModelMetadata.read(triton_server.repository / line.model / line.model_version)
        assert line.p_fake == pytest.approx(calibrate(line.logit, meta.temperature))
        assert line.verdict == decide(line.p_fake, pass_below=meta.pass_below, flag_at=meta.flag_at)


def test_scan_command_prints_json_and_exit_code(triton_server: TritonServer, files, monkeypatch):
    monkeypatch.setenv("DFMOD_MODEL_REPOSITORY", str(triton_server.repository))
    result = CliRunner().invoke(
        scan_command, ["--json", "--url", triton_server.grpc_url, *map(str, files)]
    )
    assert result.exit_code == 2, result.output  # one file was refused
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [row["verdict"] != "rejected" for row in rows] == [True, False, True]


def test_scan_command_explains_when_triton_is_down(files, monkeypatch) -> None:
    monkeypatch.setenv("DFMOD_TRITON_RETRIES", "1")
    url = f"127.0.0.1:{free_ports(1)[0]}"
    result = CliRunner().invoke(scan_command, ["--url", url, str(files[0])])
    assert result.exit_code == 1
    assert "Is Triton running? Start it with `dfmod triton`" in result.output
