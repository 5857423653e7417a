"""The round-trip benchmark still runs: two submissions per backend, against real PostgreSQL.

The counts are checked loosely (PostgreSQL pays round trips, SQLite none); the test catches a
benchmark that no longer starts or prints its tables.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_roundtrips.py"


@pytest.mark.integration
def test_bench_roundtrips_counts_round_trips_per_stage(postgres_url: str) -> None:
    """``postgres_url`` only proves PostgreSQL is there (skip or fail as every test does)."""
    command = [sys.executable, str(BENCH), "--submissions=2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    totals = re.findall(r"^\| total \| ([\d.]+) \|", done.stdout, re.M)
    assert len(totals) == 2, done.stdout
    postgres, sqlite = (float(t) for t in totals)
    assert postgres > 0 and sqlite == 0
