"""The detector on a GPU, in the forms Triton can serve, against the architecture's 217 images/s.

For a machine with an NVIDIA GPU (the development machine has none; see docs/performance.md,
"GPU"). Loads a model version's checkpoint (default: version 1) and measures, batch by batch,
images/s of the served graph (uint8 NHWC in, ImageNet normalisation inside, logit out):

- eager PyTorch fp32, and fp16 (weights and activations in half precision);
- TorchScript fp16 (``torch.jit.trace``): the form Triton's ``pytorch_libtorch`` backend loads;
- the version's ``model.onnx`` on onnxruntime's CUDA and TensorRT (fp16) execution providers,
  when the installed onnxruntime has them (``onnxruntime-gpu``), else a line saying so.

Every timing copies the uint8 batch from pinned host memory to the GPU, as a server receiving
images over the network must, and synchronises before reading the clock. It also prints the
largest |logit difference| of each form against fp32 on the same images, and writes the table to
``--out`` when given.

    python benchmarks/bench_gpu.py                       # about a minute on one GPU
    python benchmarks/bench_gpu.py --device cpu --batches 1,4 --seconds 0.5   # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moderation import contract
from training.checkpoint import model_from_checkpoint
from training.model import DeepfakeDetector, ExportWrapper

ARCHITECTURE_IMAGES_PER_S = 217.0  # the architecture document's figure for the served detector
REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository" / contract.MODEL_NAME


class HalfExportWrapper(ExportWrapper):
    """The served graph in half precision: uint8 NHWC → fp16 normalisation → detector → fp32."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float16)
        return self.model(x * self.scale.half() - self.shift.half()).float()


def _images(count: int) -> torch.Tensor:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(count, *contract.INPUT_SHAPE), dtype=np.uint8)
    return torch.from_numpy(array)


def _time(
    run: Callable[[torch.Tensor], torch.Tensor], host: torch.Tensor, device: str, seconds: float
) -> tuple[float, float]:
    """Returns (images/s, median ms per batch), H2D copy included."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(5):
        run(host.to(device, non_blocking=True))
    sync()
    times: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or len(times) < 5:
        t0 = time.perf_counter()
        run(host.to(device, non_blocking=True))
        sync()
        times.append(time.perf_counter() - t0)
    total = sum(times)
    return len(times) * len(host) / total, float(np.median(times) * 1000)


def _onnx_runners(version: Path, device: str) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    try:
        import onnxruntime as ort
    except ImportError:
        return {}
    available = set(ort.get_available_providers())
    wanted = {
        "onnxruntime CUDA EP fp32": [("CUDAExecutionProvider", {})],
        "onnxruntime TensorRT EP fp16": [
            ("TensorrtExecutionProvider", {"trt_fp16_enable": True}),
            ("CUDAExecutionProvider", {}),
        ],
    }
    runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for name, providers in wanted.items():
        if device != "cuda" or providers[0][0] not in available:
            print(f"{name}: not available here (onnxruntime providers: {sorted(available)})")
            continue
        session = ort.InferenceSession(str(version / contract.ONNX_FILENAME), providers=providers)
        runners[name] = lambda x, s=session: s.run(None, {contract.INPUT_NAME: x})[0]
    return runners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="1", help="model version folder in model_repository")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--batches", default="1,8,32,64,128", help="comma-separated batch sizes")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per cell")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("expected a CUDA GPU (torch.cuda.is_available() is False); use --device cpu")
    device = args.device
    batches = [int(b) for b in args.batches.split(",")]
    version = REPOSITORY / args.version
    checkpoint = version / "checkpoint.pt"
    detector = model_from_checkpoint(checkpoint)[0] if checkpoint.is_file() else None
    if detector is None:
        print(f"no {checkpoint}: a randomly initialised detector (timings only)")
        detector = DeepfakeDetector().eval()
    torch.backends.cudnn.benchmark = device == "cuda"

    fp32 = ExportWrapper(detector).to(device).eval()
    forms: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"eager fp32": fp32}
    if device == "cuda":
        half = HalfExportWrapper(copy.deepcopy(detector)).to(device).half().eval()
        forms["eager fp16"] = half
        with torch.inference_mode():
            example = _images(8).to(device)
            forms["TorchScript fp16 (Triton libtorch)"] = torch.jit.trace(half, example)

    lines = [
        f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; "
        f"torch {torch.__version__}; model version {args.version}"
    ]
    header = f"{'form':40} {'batch':>5} {'images/s':>10} {'ms/batch':>9} {'x 217/s':>8}"
    lines += [header, "-" * len(header)]
    reference = _images(max(batches))
    with torch.inference_mode():
        expected = fp32(reference.to(device)).float().cpu().numpy().reshape(-1)
        for name, form in forms.items():
            got = form(reference.to(device)).float().cpu().numpy().reshape(-1)
            print(f"{name}: max |logit - fp32| = {np.max(np.abs(got - expected)):.4f}")
            for batch in batches:
                host = _images(batch).pin_memory() if device == "cuda" else _images(batch)
                rate, ms = _time(form, host, device, args.seconds)
                lines.append(
                    f"{name:40} {batch:5d} {rate:10.1f} {ms:9.2f} "
                    f"{rate / ARCHITECTURE_IMAGES_PER_S:7.2f}x"
                )
    for name, run in _onnx_runners(version, device).items():
        got = run(reference.numpy()).reshape(-1)
        print(f"{name}: max |logit - fp32| = {np.max(np.abs(got - expected)):.4f}")
        for batch in batches:
            host = reference[:batch].numpy()
            for _ in range(5):
                run(host)
            times = []
            started = time.perf_counter()
            while time.perf_counter() - started < args.seconds or len(times) < 5:
                t0 = time.perf_counter()
                run(host)
                times.append(time.perf_counter() - t0)
            rate = len(times) * batch / sum(times)
            lines.append(
                f"{name:40} {batch:5d} {rate:10.1f} {np.median(times) * 1000:9.2f} "
                f"{rate / ARCHITECTURE_IMAGES_PER_S:7.2f}x"
            )
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
