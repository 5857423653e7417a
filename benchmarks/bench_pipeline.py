"""End-to-end throughput of the real stack beside the in-process limit and a naive server.

One run: generates photo-like images (0.1-3 MP, JPEG and PNG), starts the bundled Triton, the
``dfmod`` worker and API (SQLite embedded by default, ``--backend pg-redis`` for PostgreSQL and
Redis), submits through the real API at each concurrency (closed loop: each client uploads with
a ``callback_url`` on a loopback receiver, waits for the signed callback, then uploads the
next), and prints side by side: images/s, p50/p99 submit-to-callback latency, the in-process
limit (the worker's per-image work on the same images in this process: provenance, decode, PDQ
hash, resize, then onnxruntime with every output of the served model), a naive Flask + eager
PyTorch server at the same concurrency, the ratios, each stage's share of a submission's latency
(from the API's and worker's /metrics and Triton's statistics), and in the same table each
level's peak resident memory: API, worker and Triton, and the naive server's.

    python benchmarks/bench_pipeline.py            # default, about 1-2 minutes on 2 cores
    python benchmarks/bench_pipeline.py --quick    # one concurrency, fewer images
    python benchmarks/bench_pipeline.py --compare-models   # one model against two, end to end

``--compare-models`` runs the real stack twice at each concurrency, first serving
``deepfake_detector`` alone, then with ``residual_detector`` and the fitted ensemble beside it
(every item scored by both, concurrently), and prints the throughput of each, their ratio, and
the second model's Triton compute per image beside the first's.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.server
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_decode import make_images
from loadgen import (
    REQUEST_DEADLINE_S,
    Connection,
    Load,
    RssSampler,
    closed_loop,
    multipart_body,
    named_cpu_s,
)

from moderation import contract
from moderation.ensemble import model_info
from moderation.preprocess import DEFAULT_LIMITS
from moderation.provenance import ProvenanceLimits, read_provenance
from moderation.settings import PROJECT_ROOT
from serving.server import TritonServer
from tests.fixtures.stack import Stack, free_port, triton_env
from tests.fixtures.triton import private_server

FINAL = {"auto_passed", "auto_flagged", "needs_review", "decided", "failed"}


def in_process_limit(
    images: list[bytes],
    *,
    models: tuple[str, ...] = (contract.MODEL_NAME,),
    batch: int = 8,
    threads: int = 2,
    passes: int = 3,
) -> dict[str, float]:
    """Returns prepare ms/image, score ms/image and images/s for the stack's per-image work done
    in this process, with nothing between the steps (the median pass of ``passes``: one short
    pass on a shared machine is noisy).

    The work is the worker's for each of ``models`` (the ones the stack serves): provenance, then
    decode, PDQ hash and resize (the worker's own :func:`worker.scoring.prepare_picture`), then
    onnxruntime asking every output (the ``cam`` map too) of each model's newest version in
    batches of ``batch``.
    """
    from training.export import onnx_session
    from worker.scoring import prepare_picture

    repository = PROJECT_ROOT / "model_repository"
    infos = [model_info(repository, name) for name in models]
    sessions = [
        onnx_session(repository / info.name / str(info.version) / "model.onnx", threads=threads)
        for info in infos
    ]
    names = {info.name: (info.size, info.resize) for info in infos}

    def score(arrays: dict[str, np.ndarray]) -> None:
        for info, session in zip(infos, sessions, strict=True):
            stacked = arrays[info.name]
            for start in range(0, len(stacked), batch):
                session.run(None, {contract.INPUT_NAME: stacked[start : start + batch]})

    def prepared(chunk: list[bytes]) -> dict[str, np.ndarray]:
        each = []
        for data in chunk:
            read_provenance(data, ProvenanceLimits())
            each.append(prepare_picture(data, names, DEFAULT_LIMITS).inputs)
        return {name: np.concatenate([one[name] for one in each]) for name in names}

    score(prepared(images[:batch]))  # warm-up
    runs = []
    for _ in range(passes):
        started = time.perf_counter()
        arrays = prepared(images)
        decoded = time.perf_counter()
        score(arrays)
        done = time.perf_counter()
        runs.append(
            {
                "prepare_ms": (decoded - started) / len(images) * 1000,
                "score_ms": (done - decoded) / len(images) * 1000,
                "images_per_s": len(images) / (done - started),
            }
        )
    return sorted(runs, key=lambda run: run["images_per_s"])[len(runs) // 2]


class LimitMeter:
    """Measures the in-process limit around every load level, and keeps every measurement.

    The shared host's speed drifts by several per cent within a run (10 % between the two ends of
    one run has been seen), so each level is compared with the mean of the limits measured just
    before and just after it (:meth:`bracket`), not with one figure for the whole run.
    """

    def __init__(self, images: list[bytes]) -> None:
        self.images = images
        self.runs: list[dict[str, float]] = []

    def measure(self) -> float:
        """Measures the limit once more; returns its images/s."""
        self.runs.append(in_process_limit(self.images))
        return self.runs[-1]["images_per_s"]

    def bracket(
        self, levels: list[int], run_level: Callable[[int], Load], rss: RssSampler
    ) -> list[Load]:
        """Runs ``run_level`` for each concurrency between two measurements; each Load's
        ``extra["limit"]`` is the mean of the two, its ``rss_mib`` the peak memory of ``rss``'s
        process trees during the level."""
        loads, before = [], self.measure()
        for concurrency in levels:
            rss.window()  # the level's memory window starts here
            load = run_level(concurrency)
            load.rss_mib = rss.window()
            after = self.measure()
            load.extra["limit"] = (before + after) / 2
            loads.append(load)
            before = after
        return loads

    def summary(self) -> dict[str, float]:
        """Returns the mean of every measurement (decode ms, score ms, images/s), min and max."""
        rates = [run["images_per_s"] for run in self.runs]
        mean = {key: float(np.mean([run[key] for run in self.runs])) for key in self.runs[0]}
        return {**mean, "min": min(rates), "max": max(rates), "count": len(rates)}


def ratio(load: Load) -> float:
    """Returns a level's images/s over the in-process limit measured around it."""
    return load.images_per_s / load.extra.get("limit", float("nan"))


class CallbackWatcher:
    """A platform's webhook endpoint on loopback: learns each verdict from its signed callback.

    This is how a platform hears about verdicts, and it keeps the measurement off the API: polling
    the API for 2 clients' worth of submissions cost the API more CPU than the uploads did.
    Signatures are not checked here (the tests do that); the receiver only records arrivals.
    """

    def __init__(self) -> None:
        self.done: dict[str, float | None] = {}
        self.arrived: dict[str, float] = {}  # submission id -> wall-clock arrival (epoch s)
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        watcher = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    watcher._record(json.loads(body)["data"])

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/dfmod"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _event(self, submission_id: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(submission_id, threading.Event())

    def _record(self, item: dict) -> None:
        if item["id"] not in self.done and item["status"] in FINAL:
            self.arrived[item["id"]] = time.time()
            self.done[item["id"]] = _server_latency(item)
            self._event(item["id"]).set()

    def wait(self, submission_id: str) -> float | None:
        """Returns the server-side latency once final (None if failed or not final in time)."""
        self._event(submission_id).wait(REQUEST_DEADLINE_S)
        return self.done.get(submission_id)

    def __enter__(self) -> CallbackWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=15)


def _server_latency(item: dict) -> float | None:
    if item["status"] == "failed" or not item.get("completed_at"):
        return None
    done = dt.datetime.fromisoformat(item["completed_at"].replace("Z", "+00:00"))
    made = dt.datetime.fromisoformat(item["created_at"].replace("Z", "+00:00"))
    return (done - made).total_seconds()


Upload = tuple[bytes, str]  # a multipart body and its Content-Type, encoded before the load


def submitter(
    watcher: CallbackWatcher, api_key: str, images: list[bytes]
) -> tuple[Callable[[Connection, Upload], float | None], list[Upload]]:
    """Returns a sender (upload through the API, wait for the callback; server latency or None)
    and its payloads: each image's multipart body with the callback URL."""
    uploads = [multipart_body({"callback_url": watcher.url}, "file", data) for data in images]

    def send(connection: Connection, upload: Upload) -> float | None:
        body, content_type = upload
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": content_type}
        status, answer = connection.post("/v1/submissions", body, headers)
        if status not in (200, 201, 202):
            return None
        return watcher.wait(json.loads(answer)["id"])

    return send, uploads


def smoke_check(api_url: str, api_key: str, image: bytes) -> None:
    """Submits one image with the package's client and waits for its verdict, so a stack that
    does not score fails before the load instead of measuring errors."""
    from moderation.client import Client

    with Client(api_url, api_key) as dfmod:
        submitted = dfmod.submit_bytes(image)  # the worker reads the bytes, not the type
        done = dfmod.wait(submitted.id, timeout_s=REQUEST_DEADLINE_S)
    if done.verdict is None:
        raise RuntimeError(f"the stack did not score the smoke-check image: {done.failure}")


def scraped_totals(
    text: str, name: str, label: str, where: dict[str, str] | None = None
) -> dict[str, dict[str, float]]:
    """Returns {label value: {sample suffix: total}} of the Prometheus family ``name`` in the
    exposition ``text`` (suffixes ``sum``/``count`` of a histogram, ``total`` of a counter; only
    samples whose labels include ``where``)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if any(sample.labels.get(k) != v for k, v in (where or {}).items()):
                continue
            suffix = sample.name[len(name) + 1 :]
            entry = totals.setdefault(sample.labels.get(label, ""), {})
            entry[suffix] = entry.get(suffix, 0.0) + sample.value
    return totals


def system_metrics(stack: Stack) -> dict[str, tuple[float, float]]:
    """Returns (sum s, count) per worker stage plus the API's upload handling, and
    ("cpu_" + stage: (CPU s, 0)) per worker stage, cumulative."""
    port = stack.env["DFMOD_WORKER_METRICS_PORT"]
    worker = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    totals = {
        stage: (values.get("sum", 0.0), values.get("count", 0.0))
        for stage, values in scraped_totals(worker, "dfmod_worker_stage_seconds", "stage").items()
    }
    cpu = scraped_totals(worker, "dfmod_worker_stage_cpu_seconds", "stage")
    totals |= {f"cpu_{stage}": (values.get("total", 0.0), 0.0) for stage, values in cpu.items()}
    api = scraped_totals(
        requests.get(f"{stack.api_url}/metrics", timeout=10).text,
        "dfmod_http_request_duration_seconds",
        "route",
        where={"method": "POST"},
    ).get("/v1/submissions", {})
    totals["api"] = (api.get("sum", 0.0), api.get("count", 0.0))
    return totals


def triton_times(server: TritonServer) -> dict[str, float]:
    """Returns Triton's cumulative requests, queue ns, compute ns, inferences and executions."""
    totals = dict.fromkeys(("requests", "queue_ns", "compute_ns", "inferences", "executions"), 0.0)
    for model in server.statistics()["model_stats"]:
        stats = model["inference_stats"]
        totals["requests"] += float(stats["success"]["count"])
        totals["queue_ns"] += float(stats["queue"]["ns"])
        for part in ("compute_input", "compute_infer", "compute_output"):
            totals["compute_ns"] += float(stats[part]["ns"])
        totals["inferences"] += float(model["inference_count"])
        totals["executions"] += float(model["execution_count"])
    return totals


def _fill_bank(database: str, entries: int) -> None:
    """Migrates the database and adds a shared fake bank of random PDQ hashes (none of the
    benchmark's images match: the lookup runs, the model decides)."""
    from bench_banks import fill_bank

    from moderation.db import migrate

    migrate(database)
    codes = np.random.default_rng(7).integers(0, 256, size=(entries, 32), dtype=np.uint8)
    fill_bank(database, codes)
    print(f"bank of {entries:,} random PDQ hashes added", flush=True)


# The servers' processes (by command name), whose CPU no tree of the stack holds; on the embedded
# stack they idle (their CPU then is whatever else the host asks of them).
SERVICES = ("postgres", "redis-server")


@contextlib.contextmanager
def started_stack(args: argparse.Namespace, root: Path, server: TritonServer) -> Iterator[Stack]:
    worker_args: tuple[str, ...] = ("--concurrency", str(args.worker_concurrency))
    if args.pool:
        worker_args += ("--pool", args.pool)
    env = {
        **triton_env(server),
        "DFMOD_WORKER_METRICS_PORT": str(free_port()),
        "DFMOD_RATE_LIMIT_PER_MINUTE": "0",  # one tenant sends every submission of the run
    }
    with contextlib.ExitStack() as cleanup:
        if args.backend == "pg-redis":
            from tests.fixtures.database import fresh_postgres_database

            database = cleanup.enter_context(fresh_postgres_database())
            broker = f"redis://127.0.0.1:6379/{args.redis_db}"
            import redis

            redis.Redis.from_url(broker).flushdb()
        else:
            database = f"sqlite:///{root / 'data' / 'dfmod.db'}"
            broker = f"sqla+sqlite:///{root / 'data' / 'broker.db'}"
        (root / "data").mkdir(parents=True, exist_ok=True)
        if args.bank_entries:
            _fill_bank(database, args.bank_entries)
        stack = Stack(
            name=args.backend,
            root=root,
            database_url=database,
            broker_url=broker,
            env=env,
            worker_args=worker_args,
        )
        yield cleanup.enter_context(stack)


def run_stack(
    args: argparse.Namespace,
    images: list[bytes],
    root: Path,
    meter: LimitMeter,
    *,
    prepare: Callable[[Path], object] | None = None,
) -> tuple[list[Load], dict[str, tuple[float, int]]]:
    """Returns one Load per concurrency through the real API (each level's peak RSS per process
    tree in ``Load.rss_mib``), and each tree's peak RSS (MiB) over the run with its size in
    processes then. ``prepare``, when given, changes the server's copy of the repository before
    it starts (benchmarks/bench_gpu_stack.py serves TorchScript with it)."""
    with (
        contextlib.ExitStack() as cleanup,
        private_server(root, prepare=prepare) as server,
        started_stack(args, root, server) as stack,
    ):
        watcher = cleanup.enter_context(CallbackWatcher())
        api_key = stack.tenant().api_key
        smoke_check(stack.api_url, api_key, images[0])
        send, uploads = submitter(watcher, api_key, images)
        closed_loop("warm-up", stack.api_url, send, uploads, concurrency=2, total=4)
        roots = {name: proc.pid for name, proc in stack.procs.items()}
        roots["triton"] = server._process.pid if server._process else 0

        def run_level(concurrency: int) -> Load:
            before, cpu_before = triton_times(server), {**rss.cpu(), "bench": time.process_time()}
            stages_before, services_before = system_metrics(stack), named_cpu_s(SERVICES)
            faults_before = rss.minor_faults()
            load = closed_loop(
                "dfmod e2e",
                stack.api_url,
                send,
                uploads,
                concurrency=concurrency,
                total=args.requests,
            )
            after, cpu_after = triton_times(server), {**rss.cpu(), "bench": time.process_time()}
            stages_after, services_after = system_metrics(stack), named_cpu_s(SERVICES)
            faults_after = rss.minor_faults()
            delta = {k: after[k] - before[k] for k in after}
            count = max(delta["requests"], 1)
            load.extra = {
                "queue_ms": delta["queue_ns"] / count / 1e6,
                "compute_ms": delta["compute_ns"] / count / 1e6,
                "avg_batch": delta["inferences"] / max(delta["executions"], 1),
            }
            done = max(len(load.latencies_s), 1)
            for name, (total_s, _count) in stages_after.items():
                spent = total_s - stages_before.get(name, (0.0, 0.0))[0]
                load.extra[f"stage_ms_{name}"] = spent / done * 1e3
            for name in cpu_after:
                load.extra[f"cpu_ms_{name}"] = (cpu_after[name] - cpu_before[name]) / done * 1e3
            load.extra["services_cpu_ms"] = (services_after - services_before) / done * 1e3
            for name in faults_after:
                load.extra[f"faults_{name}"] = (faults_after[name] - faults_before[name]) / done
            return load

        with RssSampler(roots) as rss:
            loads = meter.bracket(args.levels, run_level, rss)
        peak = {name: (kib / 1024, rss.processes[name]) for name, kib in rss.peak.items()}
    return loads, peak


def add_second_model(repository: Path) -> None:
    """Adds the committed residual_detector and ensemble to a private server's repository."""
    import shutil

    for name in ("residual_detector", "_ensemble"):
        shutil.copytree(
            PROJECT_ROOT / "model_repository" / name,
            repository / name,
            ignore=shutil.ignore_patterns("checkpoint.pt"),
        )


def model_compute_ms(server: TritonServer, name: str) -> tuple[float, float]:
    """Returns (cumulative compute ms, images) Triton spent on one model."""
    url = f"{server.http_url}/v2/models/{name}/stats"
    body = requests.get(url, timeout=10).json()
    compute_ns, images = 0.0, 0.0
    for model in body["model_stats"]:
        stats = model["inference_stats"]
        for part in ("compute_input", "compute_infer", "compute_output"):
            compute_ns += float(stats[part]["ns"])
        images += float(model["inference_count"])
    return compute_ns / 1e6, images


def compare_models(args: argparse.Namespace, images: list[bytes], root: Path) -> None:
    """Prints end-to-end images/s with one model and with two, and each model's compute."""
    results: dict[str, list[tuple[Load, dict[str, float]]]] = {}
    for mode in ("one model", "two models"):
        prepare = add_second_model if mode == "two models" else None
        where = root / mode.replace(" ", "-")
        with (
            contextlib.ExitStack() as cleanup,
            private_server(where, prepare=prepare) as server,
            started_stack(args, where, server) as stack,
        ):
            watcher = cleanup.enter_context(CallbackWatcher())
            send, uploads = submitter(watcher, stack.tenant().api_key, images)
            closed_loop("warm-up", stack.api_url, send, uploads, concurrency=2, total=4)
            names = ["deepfake_detector"] + (["residual_detector"] if prepare else [])
            for level in args.levels:
                before = {n: model_compute_ms(server, n) for n in names}
                load = closed_loop(
                    mode, stack.api_url, send, uploads, concurrency=level, total=args.requests
                )
                after = {n: model_compute_ms(server, n) for n in names}
                per_image = {
                    n: (after[n][0] - before[n][0]) / max(after[n][1] - before[n][1], 1)
                    for n in names
                }
                results.setdefault(mode, []).append((load, per_image))
    print("\nOne model against two (same images, same stack, every item scored by each model)")
    print(
        f"{'clients':>7} {'1 model img/s':>14} {'2 models img/s':>15} {'ratio':>6} "
        f"{'p50 ms 1/2':>13} {'deepfake ms/img':>16} {'residual ms/img':>16}"
    )
    for (one, _), (two, cost) in zip(results["one model"], results["two models"], strict=True):
        print(
            f"{one.concurrency:>7} {one.images_per_s:>14.1f} {two.images_per_s:>15.1f} "
            f"{two.images_per_s / one.images_per_s:>5.2f}x "
            f"{one.pct(50):>6.0f}/{two.pct(50):<6.0f} "
            f"{cost['deepfake_detector']:>16.2f} {cost['residual_detector']:>16.2f}"
        )


@contextlib.contextmanager
def naive_server(root: Path) -> Iterator[tuple[str, int]]:
    """Yields the URL and pid of a started naive server (benchmarks/naive_server.py) on
    loopback."""
    port = free_port()
    log = open(root / "naive.log", "wb")  # noqa: SIM115 - closed below
    command = [
        sys.executable,
        str(Path(__file__).with_name("naive_server.py")),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/healthz", timeout=2).ok:
                    break
            time.sleep(0.3)
        else:
            raise RuntimeError(f"naive server did not start: {(root / 'naive.log').read_text()}")
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run_naive(
    args: argparse.Namespace, images: list[bytes], root: Path, meter: LimitMeter
) -> list[Load]:
    """Returns one Load per concurrency against the naive Flask + eager PyTorch server."""

    headers = {"Content-Type": "application/octet-stream"}

    def send(connection: Connection, data: bytes) -> float | None:
        status, _answer = connection.post("/score", data, headers)
        return 0.0 if status == 200 else None

    with naive_server(root) as (url, pid), RssSampler({"naive": pid}) as rss:
        closed_loop("warm-up", url, send, images, concurrency=2, total=4)

        return meter.bracket(
            args.levels,
            lambda c: closed_loop(
                "naive flask+torch", url, send, images, concurrency=c, total=args.requests
            ),
            rss,
        )


RSS_ORDER = ("api", "worker", "triton", "naive")


def print_report(
    limit: dict[str, float],
    stack: list[Load],
    naive: list[Load],
    rss: dict[str, tuple[float, int]],
) -> None:
    """Prints the side-by-side table (memory included), the ratios and the stage shares."""
    print(
        f"\n{'path':20} {'conc':>4} {'img/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'err':>4}"
        f" {'x limit':>7} {'server p50/p99 ms':>18} {'peak RSS MiB':>16}"
    )
    print(
        f"{'in-process limit':20} {'-':>4} {limit['images_per_s']:7.1f} {'':>8} {'':>8} "
        f"{'':>4} {1.0:7.2f}   (mean of {limit['count']:.0f}: {limit['min']:.1f}-"
        f"{limit['max']:.1f}; each level's x limit is to the two around it)"
    )
    for load in [*stack, *naive]:
        server = ""
        if load.server_s and load.label.startswith("dfmod"):
            p50, p99 = np.percentile(load.server_s, [50, 99]) * 1000
            server = f"{p50:.0f}/{p99:.0f}"
        memory = "/".join(f"{load.rss_mib[name]:.0f}" for name in RSS_ORDER if name in load.rss_mib)
        print(
            f"{load.label:20} {load.concurrency:4d} {load.images_per_s:7.1f} {load.pct(50):8.0f}"
            f" {load.pct(99):8.0f} {load.errors:4d}"
            f" {ratio(load):7.2f}"
            f" {server:>18} {memory:>16}"
        )
    print(
        "peak RSS MiB: the level's peak resident memory of each process tree, sampled every 0.5 s;"
        " dfmod api/worker/triton, naive: its one process"
    )
    print("\nratios at equal concurrency (dfmod / naive):")
    for ours, theirs in zip(stack, naive, strict=True):
        memory = ""
        if ours.rss_mib and theirs.rss_mib:
            ours_mib, theirs_mib = sum(ours.rss_mib.values()), theirs.rss_mib["naive"]
            memory = f"  peak RSS {ours_mib:.0f} (the trees' peaks summed) vs {theirs_mib:.0f} MiB"
        print(
            f"  conc {ours.concurrency:3d}: throughput"
            f" {ours.images_per_s / theirs.images_per_s:5.2f}x"
            f"  p99 {ours.pct(99):.0f} vs {theirs.pct(99):.0f} ms{memory}"
        )
    best = max(stack, key=ratio)
    fastest = max(load.images_per_s for load in stack)
    print(
        f"best dfmod e2e / in-process limit: {ratio(best):.2f} (at {best.concurrency} clients; "
        f"{fastest / limit['images_per_s']:.2f} for the fastest level against the whole run's "
        "mean limit)"
    )
    print_stages(limit, stack)
    print(
        "\npeak RSS over the whole run (MiB, process trees): "
        + ", ".join(
            f"{name} {mib:.0f} ({processes} process{'es' if processes != 1 else ''})"
            for name, (mib, processes) in sorted(rss.items(), key=lambda kv: RSS_ORDER.index(kv[0]))
        )
    )


STAGE_ORDER = (
    "api",
    "queue",
    "database",
    "blob",
    "provenance",
    "decode",
    "resize",
    "hash",
    "match",
    "inference",
    "callback_queue",
    "callback",
)


def print_stages(limit: dict[str, float], stack: list[Load]) -> None:
    """Prints where a submission's time goes (the system's own metrics) and CPU per process."""
    print(
        "\nwhere a submission's time goes (mean ms per submission, from the API's and the "
        "worker's /metrics and Triton's statistics; share of the client's upload->callback time):"
    )
    for load in stack:
        latency = float(np.mean(load.latencies_s)) * 1000 if load.latencies_s else float("nan")
        parts = {name: load.extra.get(f"stage_ms_{name}", 0.0) for name in STAGE_ORDER}
        inference = parts.pop("inference")
        queue, compute = load.extra["queue_ms"], load.extra["compute_ms"]
        parts["wire"] = max(inference - queue - compute, 0.0)
        parts["triton queue"], parts["triton compute"] = queue, compute
        for name in ("callback_queue", "callback"):  # after Triton, in the order they happen
            parts[name] = parts.pop(name)
        shares = ", ".join(f"{k} {v:.1f} ({v / latency:.0%})" for k, v in parts.items())
        print(
            f"  conc {load.concurrency:3d}: upload->callback {latency:.0f} ms; {shares}; "
            f"sum {sum(parts.values()):.0f} ms; avg triton batch {load.extra['avg_batch']:.2f}"
        )
    print(
        "  (the stages overlap a little: the API answers after the row is queued, and a delivery's"
        " last database write follows the callback the client already has)"
    )
    print(
        f"  in-process: provenance + decode + hash + resize {limit['prepare_ms']:.1f} ms/img, "
        f"onnxruntime batch 8 {limit['score_ms']:.1f} ms/img"
    )
    print("\nCPU ms per submission by process tree (bench = load generator + callback receiver):")
    for load in stack:
        cpu = {k[7:]: v for k, v in load.extra.items() if k.startswith("cpu_ms_")}
        total = sum(cpu.values())
        shares = ", ".join(f"{k} {v:.1f} ({v / total:.0%})" for k, v in cpu.items())
        services = load.extra.get("services_cpu_ms", 0.0)
        print(
            f"  conc {load.concurrency:3d}: {shares}; total {total:.1f} ms; "
            f"with the PostgreSQL and Redis servers {total + services:.1f} ms"
        )
    print("\nminor page faults per submission by process tree (pages mapped in afresh):")
    for load in stack:
        faults = {k[7:]: v for k, v in load.extra.items() if k.startswith("faults_")}
        print(
            f"  conc {load.concurrency:3d}: " + ", ".join(f"{k} {v:.0f}" for k, v in faults.items())
        )
    print(
        "\nthe worker's CPU ms per submission by stage (its working threads' CPU time, from "
        "/metrics; other = the worker's CPU less the stages': Celery, the broker, logging):"
    )
    for load in stack:
        stages = {
            name: load.extra[f"stage_ms_cpu_{name}"]
            for name in STAGE_ORDER
            if f"stage_ms_cpu_{name}" in load.extra
        }
        stages["other"] = load.extra.get("cpu_ms_worker", 0.0) - sum(stages.values())
        shares = ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
        print(f"  conc {load.concurrency:3d}: {shares}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one concurrency, fewer images")
    parser.add_argument("--images", type=int, default=24, help="distinct generated images")
    parser.add_argument("--requests", type=int, default=120, help="submissions per level")
    parser.add_argument("--concurrency", default="4,16", help="comma-separated client counts")
    parser.add_argument("--backend", choices=("embedded", "pg-redis"), default="embedded")
    parser.add_argument("--redis-db", type=int, default=14, help="Redis db index (flushed)")
    parser.add_argument("--worker-concurrency", type=int, default=4, help="worker threads/procs")
    parser.add_argument("--pool", choices=("threads", "prefork", "solo"), default=None)
    parser.add_argument("--skip-naive", action="store_true", help="leave out the naive server")
    parser.add_argument(
        "--bank-entries", type=int, default=0, help="a shared bank of N random PDQ hashes"
    )
    parser.add_argument(
        "--compare-models", action="store_true", help="one model against two (only this table)"
    )
    args = parser.parse_args()
    if args.quick:
        args.images, args.requests, args.concurrency = 12, 24, "8"
    args.levels = [int(c) for c in args.concurrency.split(",")]
    return args


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    formats = make_images(args.images)
    images = [data for _, data in formats]
    sizes = [len(d) / 1024 for d in images]
    print(
        f"{len(images)} images ({sum(f == 'PNG' for f, _ in formats)} PNG), 0.1-3 MP, "
        f"{min(sizes):.0f}-{max(sizes):.0f} KiB; {args.requests} requests per level; "
        f"backend {args.backend}; worker concurrency {args.worker_concurrency}"
    )
    if args.compare_models:
        with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
            compare_models(args, images, Path(tmp))
        print(f"\ntotal bench time {time.monotonic() - started:.0f} s")
        return
    meter = LimitMeter(images)  # measures the limit around every level (see LimitMeter)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        root = Path(tmp)
        stack, rss = run_stack(args, images, root / "stack", meter)
        naive = [] if args.skip_naive else run_naive(args, images, root, meter)
    if args.skip_naive:
        naive = [Load("naive (skipped)", c, float("nan"), []) for c in args.levels]
    print_report(meter.summary(), stack, naive, rss)
    print(f"\ntotal bench time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
