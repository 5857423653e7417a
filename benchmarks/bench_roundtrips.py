"""PostgreSQL round trips and client CPU per submission, stage by stage (API, claim, verdict,
callback), counted on the wire.

A small TCP proxy sits between this process and PostgreSQL and counts what the client sends: a
round trip is a message that makes the server answer and wait for the next one (a simple
``Query``, or the ``Sync`` closing an extended-protocol exchange). The stages run one after the
other in this process, so each count is exact: the API's ``POST /v1/submissions`` (Flask test
client; the task goes to Redis), the worker's scoring (:func:`worker.scoring.score_submission`
with a stand-in for Triton that answers a fixed logit, so only the database work is real) and the
callback's first attempt to a loopback receiver (claimed by the verdict's write, as the score task
does when a dispatch thread is free: :func:`worker.callbacks.deliver_claimed`). The same stages
run on SQLite for the CPU comparison (no round trips there).

    .venv/bin/python benchmarks/bench_roundtrips.py --submissions 50

Needs PostgreSQL (``DFMOD_TEST_POSTGRES_ADMIN_URL``, default the test server) and Redis
(``--redis-db``, flushed).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import socket
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class CountingProxy:
    """Forwards TCP connections to ``target`` and counts the PostgreSQL frontend messages."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.counts: Counter[str] = Counter()
        self._texts: dict[bytes, str] = {}  # statement name -> its text (Parse), per proxy
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> Counter[str]:
        """Returns the counts so far and starts again from zero."""
        with self._lock:
            counts, self.counts = self.counts, Counter()
        return counts

    def _accept(self) -> None:
        while True:
            client, _ = self._server.accept()
            upstream = socket.create_connection(self.target)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._frontend, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _frontend(self, source: socket.socket, sink: socket.socket) -> None:
        buffer = b""
        started = False  # the startup packet has no type byte
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
                buffer += data
                while True:
                    if not started:
                        if len(buffer) < 4:
                            break
                        (length,) = struct.unpack("!i", buffer[:4])
                        if len(buffer) < length:
                            break
                        buffer, started = buffer[length:], True
                        continue
                    if len(buffer) < 5:
                        break
                    kind = chr(buffer[0])
                    (length,) = struct.unpack("!i", buffer[1:5])
                    if len(buffer) < 1 + length:
                        break
                    self._count(kind, buffer[5 : 1 + length])
                    buffer = buffer[1 + length :]
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _count(self, kind: str, body: bytes) -> None:
        with self._lock:
            if kind in "QS":  # the server answers and waits: one round trip
                self.counts["round_trips"] += 1
            if kind == "Q":
                text = body.rstrip(b"\0").decode(errors="replace").strip().upper()
                word = text.split(None, 1)[0] if text else ""
                if word in ("BEGIN", "COMMIT", "ROLLBACK"):
                    self.counts[word.lower()] += 1
                elif text in ("", ";") or text.startswith("SELECT 1"):  # pool_pre_ping
                    self.counts["ping"] += 1
                else:
                    self.counts["statements"] += 1
            elif kind == "B":  # one Bind per statement of the extended protocol
                name = body[body.index(b"\0") + 1 :].split(b"\0", 1)[0]
                text = self._texts.get(name, "")
                ping = text in ("", ";") or text.startswith("SELECT 1")
                self.counts["ping" if ping else "statements"] += 1
            elif kind == "P":  # a Parse names a statement text (unnamed: the next Bind runs it)
                self.counts["parses"] += 1
                name, rest = body.split(b"\0", 1)
                text = rest.split(b"\0", 1)[0].decode(errors="replace").strip().upper()
                self._texts[name] = text


def _image(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(256, 320, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


class _StandIn:
    """Answers every model's request with one fixed logit (no Triton)."""

    def __init__(self, settings: Any) -> None:
        from worker.models import ModelAnswer

        self.settings = settings
        self._answer = ModelAnswer

    def enabled(self, _tenant_models: Any) -> list[str]:
        return [self.settings.model_name]

    def info(self, _name: str) -> None:
        return None

    def infer(self, inputs: dict[str, np.ndarray], primary: Any = None) -> list[Any]:
        return [self._answer(name, "1", np.zeros(1), 1.0) for name in inputs]


@contextlib.contextmanager
def _database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'dfmod.db'}"
        return
    from tests.fixtures.database import fresh_postgres_database

    with fresh_postgres_database() as url:
        yield url


def _cpu() -> float:
    return time.thread_time()


def run(kind: str, submissions: int, redis_db: int, proxy: CountingProxy | None) -> dict:
    """Returns per stage: round trips etc. (PostgreSQL) and CPU ms, per submission."""
    import redis
    from sqlalchemy.engine import make_url

    import worker.scoring as scoring
    from moderation.db import migrate
    from moderation.settings import load_settings
    from tests.fixtures.database import create_test_tenant
    from tests.fixtures.receiver import CallbackReceiver
    from webhook_api import create_app
    from worker import callbacks

    results: dict[str, Counter[str]] = {}
    cpu: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp_name, _database(kind, Path(tmp_name)) as url:
        tmp = Path(tmp_name)
        migrate(url)
        _tenant_id, api_key, secret = create_test_tenant(url)
        app_url = url
        if proxy is not None:
            parsed = make_url(url)
            app_url = parsed.set(port=proxy.port, query={"sslmode": "disable"}).render_as_string(
                hide_password=False
            )
        broker = f"redis://127.0.0.1:6379/{redis_db}"
        redis.Redis.from_url(broker).flushdb()
        settings = load_settings(
            environ={},
            data_dir=tmp / "data",
            database_url=app_url,
            broker_url=broker,
            outbound_allowlist="127.0.0.0/8",
            rate_limit_per_minute=0,
        )
        app = create_app(settings)
        http = app.test_client()
        from worker.deps import WorkerDeps

        deps = WorkerDeps.from_settings(settings)
        original = scoring.get_model_set
        scoring.get_model_set = lambda _settings: _StandIn(settings)  # type: ignore[assignment]
        images = [_image(seed) for seed in range(4)]
        try:
            with CallbackReceiver(secret=secret) as receiver:
                headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "image/jpeg"}
                callback = receiver.url()
                warm = 5  # connections opened and statements prepared before counting
                ids, deliveries = [], []
                for stage_name in ("api", "score", "deliver"):
                    results[stage_name] = Counter()

                @contextlib.contextmanager
                def measured(stage_name: str, counting: bool) -> Iterator[None]:
                    """Adds the block's CPU time and round trips to the stage when counting."""
                    if proxy is not None:
                        proxy.reset()
                    start = _cpu()
                    yield
                    if counting:
                        cpu[stage_name] += _cpu() - start
                        if proxy is not None:
                            results[stage_name] += proxy.reset()

                for i in range(warm + submissions):
                    with measured("api", counting := i >= warm):
                        answer = http.post(
                            "/v1/submissions",
                            query_string={"callback_url": callback},
                            data=images[i % len(images)],
                            headers=headers,
                        )
                        assert answer.status_code == 202, answer.get_data(as_text=True)
                    ids.append((counting, answer.get_json()["id"]))
                for counting, submission_id in ids:
                    with measured("score", counting):
                        scored = scoring.score_submission(
                            submission_id=submission_id,
                            session_factory=deps.session_factory,
                            blobs=deps.blobs,
                            client=SimpleNamespace(),  # type: ignore[arg-type]
                            settings=settings,
                            # as the score task does with a dispatch thread free for the callback
                            claim_first_attempt=lambda: callbacks.attempt_lease_s(settings),
                        )
                        assert scored.attempt is not None, scored
                    deliveries.append((counting, scored.attempt))
                for counting, attempt in deliveries:
                    with measured("deliver", counting):
                        done = callbacks.deliver_claimed(
                            attempt, session_factory=deps.session_factory, settings=settings
                        )
                        assert done.status == "delivered", done
        finally:
            scoring.get_model_set = original  # type: ignore[assignment]
            app.extensions["dfmod"].engine.dispose()
            deps.session_factory.kw["bind"].dispose()
    table = {}
    for stage_name, counts in results.items():
        row = {k: v / submissions for k, v in counts.items()}
        row["cpu_ms"] = 1000 * cpu[stage_name] / submissions
        table[stage_name] = row
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=50)
    parser.add_argument("--redis-db", type=int, default=14)
    parser.add_argument("--backends", default="postgresql,sqlite")
    args = parser.parse_args()
    from sqlalchemy.engine import make_url

    from tests.fixtures.database import PG_ADMIN_URL

    admin = make_url(PG_ADMIN_URL)
    columns = ("round_trips", "statements", "begin", "commit", "rollback", "ping", "parses")
    for kind in args.backends.split(","):
        proxy = None
        if kind == "postgresql":
            proxy = CountingProxy((admin.host or "127.0.0.1", admin.port or 5432))
        table = run(kind, args.submissions, args.redis_db, proxy)
        print(f"\n{kind}: per submission ({args.submissions} submissions)")
        print("| stage | " + " | ".join(columns) + " | client CPU ms |")
        print("| --- " * (len(columns) + 2) + "|")
        total: Counter[str] = Counter()
        for stage_name, row in table.items():
            total.update(row)
            cells = [f"{row.get(c, 0):.1f}" for c in columns]
            print(f"| {stage_name} | " + " | ".join(cells) + f" | {row['cpu_ms']:.2f} |")
        cells = [f"{total.get(c, 0):.1f}" for c in columns]
        print("| total | " + " | ".join(cells) + f" | {total['cpu_ms']:.2f} |")


if __name__ == "__main__":
    main()
