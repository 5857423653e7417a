"""The embedded broker's cost per message: kombu's SQLite channel against dfmod's.

Publishes then fetches and acknowledges N messages through the ``sqla+sqlite`` transport in one
process with three channels, alternating for a few rounds: kombu's own (rollback journal, full
sync, ORM), dfmod's WAL pragmas on kombu's ORM statements, and dfmod's channel as shipped (WAL,
one INSERT per publish and one ``DELETE … RETURNING`` per fetch). Prints CPU and wall
milliseconds per operation and the ratios to the shipped channel.

    python benchmarks/bench_broker.py              # about 10 s
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kombu import Connection
from kombu import transport as kombu_transport
from kombu.transport import sqlalchemy as kombu_sqla

from worker.sqlite_broker import SqlaChannel, SqlaTransport


class OrmChannel(SqlaChannel):
    """dfmod's WAL channel on kombu's ORM statements (as shipped before the single statements)."""

    single_statements = False


class OrmTransport(SqlaTransport):
    Channel = OrmChannel


kombu_transport.TRANSPORT_ALIASES["benchorm"] = f"{__name__}:OrmTransport"

VARIANTS = (
    ("kombu default", "sqla+"),
    ("WAL + kombu ORM", "benchorm+"),
    ("WAL + 1 statement", "dfmodsqla+"),
)


def run(url: str, count: int) -> dict[str, float]:
    """Returns ms per publish and per fetch+ack (CPU and wall) for ``count`` messages."""
    with Connection(url) as connection:
        queue = connection.SimpleQueue("bench")
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(count):
            queue.put({"i": i})
        put_cpu, put_wall = time.process_time() - cpu, time.perf_counter() - wall
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(count):
            queue.get(timeout=5).ack()
        get_cpu, get_wall = time.process_time() - cpu, time.perf_counter() - wall
        queue.close()
    scale = 1000 / count
    return {
        "publish cpu": put_cpu * scale,
        "publish wall": put_wall * scale,
        "get+ack cpu": get_cpu * scale,
        "get+ack wall": get_wall * scale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in VARIANTS}
    for _ in range(args.rounds):
        for name, prefix in VARIANTS:
            with tempfile.TemporaryDirectory() as folder:
                kombu_sqla.Channel._engines.clear()  # a fresh engine (and file) per variant
                results[name].append(run(f"{prefix}sqlite:///{folder}/broker.db", args.messages))
    keys = list(results[VARIANTS[0][0]][0])
    print(f"{'ms per operation (median)':26}" + "".join(f"{k:>14}" for k in keys))
    medians = {
        name: {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in keys}
        for name, runs in results.items()
    }
    for name, values in medians.items():
        print(f"{name:26}" + "".join(f"{values[k]:14.2f}" for k in keys))
    ours = medians[VARIANTS[-1][0]]
    for name, _ in VARIANTS[:-1]:
        label = f"{name} / shipped"
        print(f"{label:26}" + "".join(f"{medians[name][k] / ours[k]:13.2f}x" for k in keys))


if __name__ == "__main__":
    main()
