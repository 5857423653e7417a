"""bench_model.py's cam cost still runs: one short round per batch size (figures mean nothing)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH_MODEL = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_model.py"


@pytest.mark.slow
def test_bench_model_cam_only_prints_a_ratio_per_batch() -> None:
    command = [sys.executable, str(BENCH_MODEL), "--cam-only", "--rounds=1", "--seconds=0.05"]
    root = BENCH_MODEL.parents[1]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, cwd=root
    )
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"^ +(\d+) \|.*\| +([\d.]+) \| ([+-][\d.]+) %$", done.stdout, re.M)
    assert [int(batch) for batch, _, _ in rows] == [1, 8, 32], done.stdout
    assert all(float(ratio) > 0 for _, ratio, _ in rows)
