"""The GPU benchmark still runs: a CPU smoke run of every section, on tiny settings.

The figures mean nothing here; the test catches a benchmark that no longer starts, parses or
prints its tables, which would otherwise be found only on a lent GPU machine.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_bench_gpu_smoke_run_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.txt"
    command = [
        sys.executable,
        str(BENCHMARKS / "bench_gpu.py"),
        "--device=cpu",
        "--batches=1,2",
        "--seconds=0.05",
        "--images=3",
        "--passes=1",
        "--processes=1",
        "--pipeline-batch=2",
        f"--out={out}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    table = out.read_text()
    rows = re.findall(r"^eager fp32 +(\d+) +([\d.]+) +([\d.]+) +([\d.]+)x$", table, re.M)
    assert [int(batch) for batch, *_ in rows] == [1, 2]
    assert all(float(rate) > 0 for _, rate, _, _ in rows)
    decode = re.search(r"^ +1 +(\d+) / (\d+) +(\d+) / (\d+) +(\d+) / (\d+)$", table, re.M)
    assert decode is not None, table
    assert all(int(rate) > 0 for rate in decode.groups())
    device_decode = re.search(r"^  (\d+) images/s, ([\d.]+) ms of this process's CPU", table, re.M)
    assert device_decode is not None and int(device_decode.group(1)) > 0, table


@pytest.mark.slow
@pytest.mark.integration
def test_bench_pipeline_quick_run_through_the_real_stack() -> None:
    """One short level through the bundled Triton, a worker and the API, and the naive server:
    every submission gets its verdict by callback and every table prints."""
    command = [sys.executable, str(BENCHMARKS / "bench_pipeline.py"), "--quick"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    limit = re.search(r"^in-process limit +- +([\d.]+) ", out, re.M)
    assert limit is not None and float(limit.group(1)) > 0, out
    rows = re.findall(r"^(dfmod e2e|naive flask\+torch) +8 +([\d.]+) +\d+ +\d+ +(\d+) ", out, re.M)
    assert sorted(label for label, *_ in rows) == ["dfmod e2e", "naive flask+torch"], out
    assert all(float(rate) > 0 and errors == "0" for _, rate, errors in rows), out
    cpu = re.search(
        r"^  conc   8: worker ([\d.]+) .* bench ([\d.]+) .*total ([\d.]+) ms; "
        r"with the PostgreSQL and Redis servers ([\d.]+) ms$",
        out,
        re.M,
    )
    assert cpu is not None and 0 < float(cpu.group(3)) <= float(cpu.group(4)), out
    by_stage = re.search(
        r"^  conc   8: database ([\d.]+), .*decode ([\d.]+), .*other -?[\d.]+$", out, re.M
    )
    assert by_stage is not None and float(by_stage.group(2)) > 0, out
    memory = dict(re.findall(r"^(dfmod e2e|naive flask\+torch) +8 .* ([\d/]+)$", out, re.M))
    assert re.fullmatch(r"\d+/\d+/\d+", memory["dfmod e2e"]), out  # api/worker/triton MiB
    assert all(int(mib) > 0 for mib in memory["dfmod e2e"].split("/")), out
    assert int(memory["naive flask+torch"]) > 0, out
    assert re.search(
        r"^peak RSS over the whole run .*: api \d+ \(\d+ process(es)?\), worker \d+ .*triton \d+ ",
        out,
        re.M,
    ), out


@pytest.mark.slow
@pytest.mark.integration
def test_bench_gpu_stack_cpu_mode_through_real_triton(tmp_path: Path) -> None:
    """The GPU stack benchmark's CPU mode: the traced model alone, then the API, the worker and
    the bundled Triton serving it through the backend's TorchScript path, in one table."""
    out = tmp_path / "stack.txt"
    command = [
        sys.executable,
        str(BENCHMARKS / "bench_gpu_stack.py"),
        "--quick",
        "--budget-s=240",
        f"--out={out}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    table = out.read_text()
    assert "served form: TorchScript fp32 on cpu; Triton instances KIND_CPU" in table, table
    alone = re.findall(r"^model alone +batch (\d+) +([\d.]+)  [\d.]+ ms per batch$", table, re.M)
    assert [int(batch) for batch, _ in alone] == [1, 2], table
    assert all(float(rate) > 0 for _, rate in alone), table
    stack = re.findall(
        r"^whole stack +conc (\d+) +([\d.]+)  p50/p99 \d+/\d+ ms, (\d+) errors", table, re.M
    )
    assert [int(concurrency) for concurrency, *_ in stack] == [2], table
    assert all(float(rate) > 0 and errors == "0" for _, rate, errors in stack), table
    assert re.search(r"^whole stack / model alone \(best of each\): [\d.]+ ", table, re.M), table


def test_bench_provenance_prints_every_container() -> None:
    """One quick run: each container's row, the signed copy read as untrusted (no anchors)."""
    command = [sys.executable, str(BENCHMARKS / "bench_provenance.py"), "--repeats=2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"^(jpeg|png|webp|mp4) .* untrusted$", done.stdout, re.M)
    assert rows == ["jpeg", "png", "webp", "mp4"], done.stdout


def test_every_benchmark_imports() -> None:
    # A benchmark that no smoke run covers still breaks when something it imports moves.
    names = sorted(path.stem for path in BENCHMARKS.glob("*.py"))
    script = (
        "import importlib, sys\n"
        f"sys.path[:0] = [{str(BENCHMARKS)!r}, {str(BENCHMARKS.parent)!r}]\n"
        "failed = []\n"
        f"for name in {names!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    assert len(names) >= 10
    assert done.stdout.strip() == "", done.stdout
