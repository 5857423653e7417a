"""Detector throughput on this machine, side by side in one run.

Prints training images/s, inference images/s for eager PyTorch and ONNX Runtime (fp32 and INT8)
at batch 1, 8 and 32, the model files' sizes, and what the served ``cam`` output (Grad-CAM as
forward operations) costs: the served graph against the same weights exported with ``logit`` only,
measured in alternating rounds so drift on a shared machine hits both alike. Uses a model
version's checkpoint when present (default: version 1), else a randomly initialised detector;
numbers depend on the CPU and on what else runs, so compare ratios within one run.

    python benchmarks/bench_model.py            # about a minute on 2 cores
    python benchmarks/bench_model.py --seconds 5 --threads 4
    python benchmarks/bench_model.py --cam-only --rounds 7   # only the cam cost
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moderation import contract
from training.checkpoint import model_from_checkpoint
from training.export import export_onnx, onnx_session, quantize_int8
from training.losses import FocalLoss
from training.model import DeepfakeDetector, ExportWrapper, build_model, normalize_uint8_nhwc
from training.release import generated_images

logger = logging.getLogger(__name__)

BATCHES = (1, 8, 32)
DEFAULT_CHECKPOINT = Path("model_repository") / contract.MODEL_NAME / "1" / "checkpoint.pt"


def images_per_second(step: Callable[[], None], batch: int, seconds: float) -> float:
    """Returns images/s of ``step`` (one batch per call) after one warm-up call."""
    step()
    count, start = 0, time.perf_counter()
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= 2:
            return count * batch / elapsed


def training_rate(freeze_blocks: int, batch: int, seconds: float) -> float:
    """Returns training images/s (forward, focal loss, backward, AdamW step) on CPU."""
    model = build_model(pretrained=False, freeze_blocks=freeze_blocks).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    criterion = FocalLoss()
    images = torch.from_numpy(_images(batch))
    labels = (torch.arange(batch) % 2).float()

    def step() -> None:
        loss = criterion(model(normalize_uint8_nhwc(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return images_per_second(step, batch, seconds)


def _images(batch: int) -> np.ndarray:
    base = generated_images(4)
    return np.ascontiguousarray(base[np.arange(batch) % len(base)])


def load_model(path: Path) -> tuple[DeepfakeDetector, str]:
    """Returns the detector to benchmark and where it came from."""
    if path.exists():
        return model_from_checkpoint(path)[0], str(path)
    return build_model(pretrained=False).eval(), "random initialisation"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the cam cost")
    parser.add_argument("--cam-only", action="store_true", help="measure only the cam cost")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, source = load_model(args.checkpoint)
    wrapper = ExportWrapper(model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "model.onnx")
        plain = export_onnx(model, Path(tmp) / "model.logit.onnx", cam=False)
        served = {
            "logit only": onnx_session(plain, threads=args.threads),
            "logit + cam": onnx_session(fp32, threads=args.threads),
        }
        cam = cam_cost(served, args.seconds, args.rounds)
        if args.cam_only:
            print(f"model: {source}; threads: {args.threads}; {args.seconds:.1f} s per cell")
            _print_cam(cam, args.rounds)
            return
        int8 = quantize_int8(fp32, Path(tmp) / "model.int8.onnx", _images(16))
        sessions = {
            "onnx fp32": onnx_session(fp32, threads=args.threads),
            "onnx int8": onnx_session(int8, threads=args.threads),
        }
        sizes = {"onnx fp32": fp32.stat().st_size, "onnx int8": int8.stat().st_size}
        rows = _inference_rows(wrapper, sessions, args.seconds)
    train = {n: training_rate(n, args.train_batch, args.seconds) for n in (2, 8, 14)}
    _print(source, args, rows, sizes, train)
    _print_cam(cam, args.rounds)


def rates(step: Callable[[], None], batch: int, seconds: float) -> tuple[float, float]:
    """Returns (images per wall-clock second, images per CPU second of this process)."""
    step()
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= 2:
            return count * batch / elapsed, count * batch / (time.process_time() - cpu)


def cam_cost(sessions: dict[str, Any], seconds: float, rounds: int) -> dict[int, dict[str, float]]:
    """Returns per batch the medians over alternating rounds of each session's wall and CPU rates
    and of the with-cam / logit-only ratios (the CPU ratio holds on a busy shared machine)."""
    out = {}
    for batch in BATCHES:
        feed = {contract.INPUT_NAME: _images(batch)}
        wall: dict[str, list[float]] = {name: [] for name in sessions}
        cpu: dict[str, list[float]] = {name: [] for name in sessions}
        for index in range(rounds):
            order = list(sessions) if index % 2 == 0 else list(reversed(sessions))
            for name in order:

                def run(session: Any = sessions[name], feed: dict = feed) -> None:
                    session.run(None, feed)

                per_wall, per_cpu = rates(run, batch, seconds)
                wall[name].append(per_wall)
                cpu[name].append(per_cpu)
        median = statistics.median
        out[batch] = {
            "plain_wall": median(wall["logit only"]),
            "cam_wall": median(wall["logit + cam"]),
            "wall_ratio": median(
                [c / p for p, c in zip(wall["logit only"], wall["logit + cam"], strict=True)]
            ),
            "plain_cpu": median(cpu["logit only"]),
            "cam_cpu": median(cpu["logit + cam"]),
            "cpu_ratio": median(
                [c / p for p, c in zip(cpu["logit only"], cpu["logit + cam"], strict=True)]
            ),
        }
    return out


def _print_cam(cam: dict[int, dict[str, float]], rounds: int) -> None:
    print(f"\ncam output cost (onnx fp32, median of {rounds} alternating rounds)")
    print("      |      images per wall second       |       images per CPU second")
    head = f"{'logit only':>11} | {'+ cam':>7} | ratio"
    print(f"{'batch':>5} | {head} | {head} | CPU cost")
    for batch, r in cam.items():
        print(
            f"{batch:>5} | {r['plain_wall']:>11.1f} | {r['cam_wall']:>7.1f} | "
            f"{r['wall_ratio']:5.3f} | {r['plain_cpu']:>11.1f} | {r['cam_cpu']:>7.1f} | "
            f"{r['cpu_ratio']:5.3f} | {100 * (1 - r['cpu_ratio']):+.1f} %"
        )


def _inference_rows(
    wrapper: ExportWrapper, sessions: dict, seconds: float
) -> dict[int, dict[str, float]]:
    rows: dict[int, dict[str, float]] = {}
    for batch in BATCHES:
        images = _images(batch)
        tensor = torch.from_numpy(images)

        def eager(tensor: torch.Tensor = tensor) -> None:
            with torch.no_grad():
                wrapper(tensor)

        rows[batch] = {"pytorch eager": images_per_second(eager, batch, seconds)}
        for name, session in sessions.items():
            feed = {contract.INPUT_NAME: images}

            def run_onnx(session: Any = session, feed: dict[str, np.ndarray] = feed) -> None:
                session.run(None, feed)

            rows[batch][name] = images_per_second(run_onnx, batch, seconds)
    return rows


def _print(
    source: str,
    args: argparse.Namespace,
    rows: dict[int, dict[str, float]],
    sizes: dict[str, int],
    train: dict[int, float],
) -> None:
    print(f"model: {source}; threads: {args.threads}; {args.seconds:.1f} s per cell")
    print("\ninference images/s (ratio to eager PyTorch)")
    names = list(next(iter(rows.values())))
    print(f"{'batch':>5} | " + " | ".join(f"{n:>22}" for n in names))
    for batch, row in rows.items():
        eager = row["pytorch eager"]
        cells = [f"{row[n]:>10.1f} ({row[n] / eager:>5.2f}x)".rjust(22) for n in names]
        print(f"{batch:>5} | " + " | ".join(cells))
    mb = {k: v / 1e6 for k, v in sizes.items()}
    print(
        f"\nmodel size: fp32 {mb['onnx fp32']:.1f} MB, int8 {mb['onnx int8']:.1f} MB "
        f"({sizes['onnx int8'] / sizes['onnx fp32']:.2f}x)"
    )
    int8_speedup = {b: r["onnx int8"] / r["onnx fp32"] for b, r in rows.items()}
    print(
        "int8 vs fp32 onnx images/s: "
        + ", ".join(f"batch {b}: {s:.2f}x" for b, s in int8_speedup.items())
    )
    print(f"\ntraining images/s (batch {args.train_batch}, CPU, focal loss + AdamW)")
    for blocks, rate in train.items():
        print(f"  first {blocks:>2} backbone blocks frozen: {rate:8.1f}")


if __name__ == "__main__":
    main()
