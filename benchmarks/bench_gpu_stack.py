"""The whole stack with Triton serving the detector on the GPU, beside the model alone.

For a machine with an NVIDIA GPU (docs/performance.md, "GPU"); ``--quick`` is the CPU smoke run.
One run, within ``--budget-s`` (default 450 s, sized for one GPU and 16 cores):

1. traces version 1's checkpoint with the served graph (uint8 NHWC in, ``logit`` and ``cam``
   out, as :class:`training.cam.CamExportWrapper`): TorchScript fp16 on cuda (the feature
   extractor in half precision, the head and the map in fp32), fp32 on the CPU;
2. measures that module alone in this process, images/s at a few batch sizes (the uint8 batch
   copied from pinned memory to the GPU each time, as in bench_gpu.py);
3. serves it through the bundled Triton (its python-based backend loads ``model.pt`` when the
   config's ``default_model_filename`` names it; ``instance_group`` KIND_GPU on cuda, KIND_CPU on
   the CPU) in a temporary copy of the repository, with the worker and the API in front, and
   runs bench_pipeline.py's closed loop through the real API at each concurrency;

then prints both in one table (and writes it to ``--out``). Past the budget it stops the stack,
prints what it has, and exits with status 2.

    python benchmarks/bench_gpu_stack.py                 # on the GPU machine, under 8 minutes
    python benchmarks/bench_gpu_stack.py --quick         # CPU smoke: tiny settings, figures mean
                                                         # nothing beyond "it runs"
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_decode import make_images
from bench_gpu import _images, _time
from bench_pipeline import LimitMeter, run_stack
from loadgen import Load

from moderation import contract
from moderation.settings import PROJECT_ROOT
from training.cam import CamExportWrapper, cam_from_features
from training.checkpoint import model_from_checkpoint

VERSION = "1"
CHECKPOINT = PROJECT_ROOT / "model_repository" / contract.MODEL_NAME / VERSION / "checkpoint.pt"
TORCHSCRIPT_FILENAME = "model.pt"  # a name ending in .pt turns on the backend's TorchScript path


class BudgetExceeded(Exception):
    """The run reached ``--budget-s``."""


class HalfCamExportWrapper(CamExportWrapper):
    """The served graph with the feature extractor in fp16; the head and the map stay fp32 (the
    map's floor, 1e-12, is below fp16's range, and the head is a small share of the work)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)  # type: ignore[arg-type]
        self.model.features.half()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        x = image.permute(0, 3, 1, 2).to(torch.float16)
        features = self.model.features(x * self.scale.half() - self.shift.half())
        return cam_from_features(self.model, features.float())


def trace_served(device: str, path: Path) -> str:
    """Writes the traced served graph of version 1 to ``path``; returns the form's name."""
    detector = model_from_checkpoint(CHECKPOINT)[0].eval()
    if device == "cuda":
        wrapper: CamExportWrapper = HalfCamExportWrapper(detector)
        form = "TorchScript fp16"
    else:
        wrapper, form = CamExportWrapper(detector), "TorchScript fp32"
    wrapper = wrapper.to(device).eval()
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, (_images(8).to(device),))
    names = f"{contract.OUTPUT_NAME},{contract.CAM_NAME}"
    torch.jit.save(traced, str(path), _extra_files={"output_names": names})
    return form


def model_alone(
    path: Path, device: str, batches: list[int], seconds: float
) -> tuple[list[str], float]:
    """Returns a table row per batch size (the saved module alone, images/s and ms per batch)
    and the best images/s."""
    module = torch.jit.load(str(path), map_location=device).eval()
    rows, best = [], 0.0
    with torch.inference_mode():
        for batch in batches:
            host = _images(batch).pin_memory() if device == "cuda" else _images(batch)
            rate, ms = _time(module, host, device, seconds)
            best = max(best, rate)
            rows.append(_row("model alone", f"batch {batch}", rate, f"{ms:.2f} ms per batch"))
    del module
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows, best


def prepare_repository(model_file: Path, kind: str) -> Callable[[Path], None]:
    """Returns the change to a server's copy of the repository: version 1 only, its ``model.pt``
    beside ``model.onnx`` (the server checks the ONNX is there), and the config naming it."""

    def prepare(repository: Path) -> None:
        model_dir = repository / contract.MODEL_NAME
        for folder in model_dir.iterdir():
            if folder.is_dir() and folder.name.isdigit() and folder.name != VERSION:
                shutil.rmtree(folder)
        shutil.copy2(model_file, model_dir / VERSION / TORCHSCRIPT_FILENAME)
        config = model_dir / "config.pbtxt"
        text, found = re.subn(
            r'^backend: "onnxruntime"$',
            f'backend: "onnxruntime"\ndefault_model_filename: "{TORCHSCRIPT_FILENAME}"',
            config.read_text(),
            flags=re.M,
        )
        text, kinds = re.subn(r"kind: KIND_\w+", f"kind: {kind}", text)
        if found != 1 or kinds != 1:
            raise RuntimeError(f"{config}: expected one backend line and one instance kind")
        config.write_text(text)

    return prepare


def whole_stack(
    args: argparse.Namespace, model_file: Path, kind: str, root: Path
) -> tuple[list[Load], LimitMeter]:
    """Runs bench_pipeline.py's closed loop through the API, worker and Triton serving
    ``model_file``; returns a Load per concurrency and the in-process limit measured around."""
    formats = make_images(args.images)
    images = [data for _, data in formats]
    meter = LimitMeter(images)
    stack_args = argparse.Namespace(
        backend="embedded",
        redis_db=14,
        worker_concurrency=args.worker_concurrency,
        pool=None,
        bank_entries=0,
        levels=args.levels,
        requests=args.requests,
    )
    loads, _ = run_stack(
        stack_args, images, root, meter, prepare=prepare_repository(model_file, kind)
    )
    return loads, meter


def _row(path: str, setting: str, rate: float, detail: str) -> str:
    return f"{path:12} {setting:>10} {rate:10.1f}  {detail}"


def stack_rows(loads: list[Load]) -> list[str]:
    rows = []
    for load in loads:
        detail = (
            f"p50/p99 {load.pct(50):.0f}/{load.pct(99):.0f} ms, {load.errors} errors, "
            f"Triton batch {load.extra['avg_batch']:.2f}, compute {load.extra['compute_ms']:.1f}"
            " ms per request"
        )
        rows.append(_row("whole stack", f"conc {load.concurrency}", load.images_per_s, detail))
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    cpus = os.cpu_count() or 1
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if cuda else "cpu")
    parser.add_argument("--budget-s", type=float, default=450.0, help="the whole run's limit")
    parser.add_argument("--batches", default="1,8,32", help="model alone: batch sizes")
    parser.add_argument("--seconds", type=float, default=3.0, help="model alone: s per batch")
    parser.add_argument("--images", type=int, default=48, help="distinct generated images")
    parser.add_argument("--requests", type=int, default=480, help="submissions per level")
    parser.add_argument("--concurrency", default="16,64", help="comma-separated client counts")
    parser.add_argument("--worker-concurrency", type=int, default=cpus, help="worker threads")
    parser.add_argument(
        "--instance-kind",
        choices=("auto", "KIND_GPU", "KIND_CPU"),
        default="auto",
        help="Triton instance_group kind (auto: KIND_GPU on cuda, KIND_CPU on the CPU)",
    )
    parser.add_argument("--quick", action="store_true", help="CPU smoke run, tiny settings")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    if args.quick:
        args.device, args.batches, args.seconds = "cpu", "1,2", 0.2
        args.images, args.requests, args.concurrency, args.worker_concurrency = 4, 8, "2", 2
        args.budget_s = min(args.budget_s, 300.0)
    if args.device == "cuda" and not cuda:
        sys.exit("expected a CUDA GPU (torch.cuda.is_available() is False); use --device cpu")
    args.levels = [int(c) for c in args.concurrency.split(",")]
    if args.instance_kind == "auto":
        args.instance_kind = "KIND_GPU" if args.device == "cuda" else "KIND_CPU"
    return args


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")  # trace, save
    started = time.monotonic()

    def over_budget(signum: int, frame: FrameType | None) -> None:
        raise BudgetExceeded(f"the run reached its budget of {args.budget_s:.0f} s")

    signal.signal(signal.SIGALRM, over_budget)
    signal.setitimer(signal.ITIMER_REAL, args.budget_s)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    lines = [f"device: {name}; {os.cpu_count()} CPUs; torch {torch.__version__}; version 1"]
    status = 0
    with tempfile.TemporaryDirectory(prefix="bench-gpu-stack-") as tmp:
        model_file = Path(tmp) / TORCHSCRIPT_FILENAME
        try:
            form = trace_served(args.device, model_file)
            lines.append(
                f"served form: {form} on {args.device}; Triton instances {args.instance_kind}"
            )
            header = f"{'path':12} {'setting':>10} {'images/s':>10}  detail"
            lines += [header, "-" * 72]
            batches = [int(b) for b in args.batches.split(",")]
            rows, alone = model_alone(model_file, args.device, batches, args.seconds)
            lines += rows
            print(f"{rows[-1]}\nthe model alone measured; starting the stack", flush=True)
            try:
                loads, meter = whole_stack(args, model_file, args.instance_kind, Path(tmp) / "s")
            except (pytest.skip.Exception, pytest.fail.Exception) as exc:
                if args.instance_kind != "KIND_GPU":
                    raise
                print(f"Triton could not start with KIND_GPU ({exc}); retrying with KIND_CPU")
                lines.append("(KIND_GPU did not load; instances KIND_CPU, the model still on cuda)")
                shutil.rmtree(Path(tmp) / "s", ignore_errors=True)
                loads, meter = whole_stack(args, model_file, "KIND_CPU", Path(tmp) / "s")
            lines += stack_rows(loads)
            limit = meter.summary()["images_per_s"]
            lines.append(
                _row("in-process", "limit", limit, "decode + onnxruntime CPU in the bench process")
            )
            best = max(load.images_per_s for load in loads)
            lines.append(
                f"whole stack / model alone (best of each): {best / alone:.3f} "
                f"({best:.1f} / {alone:.1f} images/s)"
            )
        except BudgetExceeded as exc:
            lines.append(f"STOPPED: {exc}; the rows above are what finished")
            status = 2
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    lines.append(f"total bench time {time.monotonic() - started:.0f} s")
    print("\n" + "\n".join(lines), flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    if status:
        sys.stdout.flush()
        os._exit(status)  # closed-loop client threads may still wait on a stopped stack


if __name__ == "__main__":
    main()
