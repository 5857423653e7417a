"""Throughput and latency of the bundled Triton beside in-process onnxruntime, in one run.

Starts the bundled ``tritonserver`` on a temporary copy of the model repository, measures
in-process onnxruntime on the same ONNX file (the limit a server can approach), then drives Triton
at each concurrency with Triton's ``perf_analyzer`` when it runs on this machine, else with a
closed-loop gRPC load generator that measures the same things (each client sends one image and
waits for the answer). Prints one table with images/s, p50/p99 latency, Triton's average executed
batch and the ratio to the in-process best.

    python benchmarks/bench_triton.py --seconds 5 --concurrency 1,2,4,8,16
    python benchmarks/bench_triton.py --max-queue-delay-us 0 --preferred 1   # config sweeps
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from moderation import contract
from moderation.settings import PROJECT_ROOT
from serving.client import TritonClient
from serving.env import free_ports
from serving.server import TritonServer


@dataclass
class Row:
    path: str
    concurrency: int
    batch: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    avg_batch: float | None = None


def _images(count: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, *contract.INPUT_SHAPE), dtype=np.uint8)


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    ms = np.asarray(latencies) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def in_process(model: Path, *, batch: int, seconds: float, threads: int) -> Row:
    """Returns onnxruntime's throughput in this process: the limit for a server on this machine."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    feed = {contract.INPUT_NAME: _images(batch)}
    for _ in range(3):
        session.run(None, feed)
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        session.run(None, feed)
        latencies.append(time.perf_counter() - started)
    p50, p99 = _percentiles(latencies)
    rate = batch * len(latencies) / sum(latencies)
    return Row(f"onnxruntime in-process t{threads}", 1, batch, rate, p50, p99)


def _grpc_load(url: str, *, concurrency: int, seconds: float) -> tuple[float, float, float]:
    image = _images(1)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    start_at, stop_at = time.perf_counter() + 1.0, time.perf_counter() + 1.0 + seconds

    def worker(index: int) -> None:
        client = TritonClient(url, timeout_s=60.0)
        client.infer(image)
        while time.perf_counter() < start_at:
            client.infer(image)  # warm-up until the measured window opens
        while (now := time.perf_counter()) < stop_at:
            client.infer(image)
            latencies[index].append(time.perf_counter() - now)
        client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = [x for per_thread in latencies for x in per_thread]
    p50, p99 = _percentiles(merged)
    return len(merged) / seconds, p50, p99


def perf_analyzer() -> str | None:
    """Returns a perf_analyzer that runs here: on PATH, in the venv, or set up by
    ``benchmarks/setup_perf_analyzer.sh`` (its wheels need glibc >= 2.38)."""
    candidates = [
        shutil.which("perf_analyzer"),
        str(Path(sys.executable).parent / "perf_analyzer"),
        str(PROJECT_ROOT / "var" / "perf_analyzer" / "perf_analyzer"),
    ]
    for binary in filter(None, candidates):
        try:
            probe = subprocess.run([binary, "--version"], capture_output=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return binary
    return None


def _perf_analyzer_load(
    binary: str, url: str, *, concurrency: int, seconds: float
) -> tuple[float, float, float]:
    with tempfile.NamedTemporaryFile(suffix=".csv") as report:
        command = [
            binary,
            *("-m", contract.MODEL_NAME, "-i", "grpc", "-u", url, "-b", "1"),
            *("--concurrency-range", f"{concurrency}:{concurrency}"),
            *("--measurement-interval", str(int(seconds * 1000)), "-f", report.name),
            "--percentile=99",
            # The CPU is shared: accept the measurement after 3 windows instead of failing on
            # p99 jitter from other processes (perf_analyzer's default demands +-10 %).
            *("--stability-percentage", "1000", "--max-trials", "3"),
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=seconds * 20 + 60)
        header, values = Path(report.name).read_text().splitlines()[:2]
    row = dict(zip(header.split(","), values.split(","), strict=True))
    return (
        float(row["Inferences/Second"]),
        float(row["p50 latency"]) / 1000,
        float(row["p99 latency"]) / 1000,
    )


def _counts(server: TritonServer) -> tuple[int, int]:
    stats = server.statistics()["model_stats"]
    return (
        sum(int(s["inference_count"]) for s in stats),
        sum(int(s["execution_count"]) for s in stats),
    )


def triton_rows(server: TritonServer, *, levels: list[int], seconds: float, tool: str | None):
    """Yields one row per concurrency level, driven by perf_analyzer or the gRPC generator."""
    name = "triton (perf_analyzer)" if tool else "triton (grpc load gen)"
    for concurrency in levels:
        inferences, executions = _counts(server)
        label = name
        try:
            if not tool:
                raise FileNotFoundError("perf_analyzer")
            rate, p50, p99 = _perf_analyzer_load(
                tool, server.grpc_url, concurrency=concurrency, seconds=seconds
            )
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            if tool:
                output = getattr(exc, "stdout", b"") or b""
                print(f"perf_analyzer failed at concurrency {concurrency}: {output[-300:]!r}")
                label = "triton (grpc load gen)"
            rate, p50, p99 = _grpc_load(server.grpc_url, concurrency=concurrency, seconds=seconds)
        after_inf, after_exec = _counts(server)
        avg = (after_inf - inferences) / max(after_exec - executions, 1)
        yield Row(label, concurrency, 1, rate, p50, p99, avg)


def _repository(args: argparse.Namespace, root: Path) -> Path:
    target = root / "model_repository" / contract.MODEL_NAME
    source = PROJECT_ROOT / "model_repository" / contract.MODEL_NAME
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.pt"))
    config = target / "config.pbtxt"
    text = config.read_text()
    if args.max_queue_delay_us is not None:
        text = re.sub(
            r"max_queue_delay_microseconds: \d+",
            f"max_queue_delay_microseconds: {args.max_queue_delay_us}",
            text,
        )
    if args.preferred is not None:
        sizes = ", ".join(args.preferred.split(","))
        text = re.sub(
            r"preferred_batch_size: \[[^\]]*\]", f"preferred_batch_size: [ {sizes} ]", text
        )
    config.write_text(text)
    return target.parent


def _print(rows: list[Row], best: float) -> None:
    print(
        f"{'path':26} {'conc':>4} {'batch':>5} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'avg exec batch':>14} {'x in-process':>12}"
    )
    for r in rows:
        avg = f"{r.avg_batch:.2f}" if r.avg_batch is not None else "-"
        print(
            f"{r.path:26} {r.concurrency:>4} {r.batch:>5} {r.images_per_s:>8.1f} "
            f"{r.p50_ms:>8.1f} {r.p99_ms:>8.1f} {avg:>14} {r.images_per_s / best:>12.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per row")
    parser.add_argument("--concurrency", default="1,2,4,8,16")
    parser.add_argument("--threads", default="1,2", help="in-process intra-op threads to try")
    parser.add_argument("--in-process-batches", default="1,8")
    parser.add_argument("--max-queue-delay-us", type=int, default=None, help="override (sweeps)")
    parser.add_argument("--preferred", default=None, help="override preferred_batch_size, e.g. 4,8")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dfmod-bench-") as tmp:
        repository = _repository(args, Path(tmp))
        versions = sorted(
            int(p.name) for p in (repository / contract.MODEL_NAME).iterdir() if p.name.isdigit()
        )
        model = repository / contract.MODEL_NAME / str(versions[-1]) / contract.ONNX_FILENAME
        # The limit is in-process onnxruntime at its best: every thread count and batch size.
        rows = [
            in_process(model, batch=int(b), seconds=args.seconds, threads=int(t))
            for t in args.threads.split(",")
            for b in args.in_process_batches.split(",")
        ]
        ports = free_ports(3)
        tool = perf_analyzer()
        print(
            f"model {model.relative_to(tmp)}; load from "
            f"{tool or 'the gRPC load generator (no perf_analyzer: setup_perf_analyzer.sh)'}"
        )
        with TritonServer(
            repository=repository,
            grpc_port=ports[0],
            http_port=ports[1],
            metrics_port=ports[2],
            work_dir=Path(tmp) / "work",
        ) as server:
            levels = [int(c) for c in args.concurrency.split(",")]
            rows += list(triton_rows(server, levels=levels, seconds=args.seconds, tool=tool))
    best_in_process = max(r.images_per_s for r in rows if r.avg_batch is None)
    _print(rows, best_in_process)
    best = max((r for r in rows if r.avg_batch is not None), key=lambda r: r.images_per_s)
    print(
        f"\nTriton at its best concurrency ({best.concurrency}): "
        f"{best.images_per_s / best_in_process:.2f} x in-process onnxruntime (goal >= 0.90)"
    )


if __name__ == "__main__":
    main()
