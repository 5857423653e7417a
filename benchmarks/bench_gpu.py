"""The detector on a GPU, in the forms Triton can serve, against the architecture's 217 images/s.

For a machine with an NVIDIA GPU (the development machine has none; see docs/performance.md,
"GPU"). Loads a model version's checkpoint (default: version 1) and measures, batch by batch,
images/s of the served graph (uint8 NHWC in, ImageNet normalisation inside, logit out):

- eager PyTorch fp32, and fp16 (weights and activations in half precision);
- TorchScript fp16 (``torch.jit.trace``): the form Triton's ``pytorch_libtorch`` backend loads;
- the version's ``model.onnx`` on onnxruntime's CUDA and TensorRT (fp16) execution providers,
  when the installed onnxruntime has them (``onnxruntime-gpu``), else a line saying so.

Then it measures where a pipeline feeding that GPU is bound: the service's own decode
(:func:`moderation.preprocess.load_image`, draft mode as served) of the end-to-end benchmark's
image mix (0.1-3 MP, JPEG and PNG) on one core and on every core of the machine, and the two
together: every core decoding while the main process stacks batches and scores them with
TorchScript fp16 on the GPU (the in-process limit of bench_pipeline.py, with the GPU as scorer).
Last, the mix's JPEGs decoded on the GPU instead (nvJPEG through ``torchvision.io.decode_jpeg``),
resized there and scored: images/s, CPU per image, and the logit difference to the CPU decode.

Every timing copies the uint8 batch from pinned host memory to the GPU, as a server receiving
images over the network must, and synchronises before reading the clock. It also prints the
largest |logit difference| of each form against fp32 on the same images, and writes the table to
``--out`` when given.

    python benchmarks/bench_gpu.py                       # about two minutes on one GPU
    python benchmarks/bench_gpu.py --device cpu --batches 1,4 --seconds 0.5 --images 6   # smoke
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_decode import MEGAPIXELS, make_images

from moderation import contract
from moderation.preprocess import DEFAULT_LIMITS, load_image
from training.checkpoint import model_from_checkpoint
from training.model import DeepfakeDetector, ExportWrapper

ARCHITECTURE_IMAGES_PER_S = 217.0  # the architecture document's figure for the served detector
REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository" / contract.MODEL_NAME


def _decode(data: bytes) -> np.ndarray:
    return load_image(data, DEFAULT_LIMITS)


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


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _score_batches(
    score: Callable[[torch.Tensor], torch.Tensor],
    arrays: Iterator[np.ndarray],
    *,
    device: str,
    batch: int,
) -> int:
    """Scores the arrays in batches of ``batch`` (the last one padded, so that no new shape is
    compiled inside the timing); returns how many arrays were scored."""
    scored = 0
    pending: list[np.ndarray] = []
    with torch.inference_mode():
        for array in arrays:
            pending.append(array)
            if len(pending) == batch:
                score(torch.from_numpy(np.stack(pending)).to(device, non_blocking=True))
                scored += batch
                pending = []
        if pending:
            scored += len(pending)
            pending += [pending[-1]] * (batch - len(pending))
            score(torch.from_numpy(np.stack(pending)).to(device))
        _sync(device)
    return scored


def decode_and_score(
    score: Callable[[torch.Tensor], torch.Tensor],
    images: list[bytes],
    pool: Pool,
    *,
    device: str,
    batch: int,
    passes: int,
    rounds: int = 2,
) -> dict[str, list[float]]:
    """Images/s of decoding alone on one core and on ``pool``'s processes, and of decoding on
    them while this process batches the arrays and scores them on ``device``; ``rounds`` of
    each, alternated, so that their spread shows."""
    work = images * passes
    pool.map(_decode, images, chunksize=1)  # warm every child
    _score_batches(score, iter([_decode(images[0])] * batch), device=device, batch=batch)
    rates: dict[str, list[float]] = {"one_core": [], "all_cores": [], "pipeline": []}
    for _ in range(rounds):
        started = time.perf_counter()
        for data in images:
            _decode(data)
        rates["one_core"].append(len(images) / (time.perf_counter() - started))
        started = time.perf_counter()
        for _ in pool.imap_unordered(_decode, work, chunksize=2):
            pass
        rates["all_cores"].append(len(work) / (time.perf_counter() - started))
        started = time.perf_counter()
        arrays = pool.imap_unordered(_decode, work, chunksize=2)
        scored = _score_batches(score, arrays, device=device, batch=batch)
        rates["pipeline"].append(scored / (time.perf_counter() - started))
    return rates


def _resized(images: list[torch.Tensor], size: int) -> torch.Tensor:
    """Decoded CHW uint8 images → uint8 NHWC [n, size, size, 3], bilinear with antialiasing (as
    Pillow's resize in :func:`moderation.preprocess.image_to_input`), on the images' device."""
    out = [
        torch.nn.functional.interpolate(
            image[None].float(), size=(size, size), mode="bilinear", antialias=True
        )[0]
        for image in images
    ]
    return torch.stack(out).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def device_decode_and_score(
    score: Callable[[torch.Tensor], torch.Tensor],
    reference: Callable[[torch.Tensor], torch.Tensor],
    jpegs: list[bytes],
    *,
    device: str,
    batch: int,
    seconds: float,
) -> dict[str, float]:
    """JPEG decoding where the model runs (nvJPEG through ``torchvision.io.decode_jpeg`` on a
    GPU), resizing there too, then scoring: images/s, this process's CPU ms per image, and the
    largest and median |logit difference| of that path against the service's CPU decode (both
    scored by ``reference``)."""
    from torchvision.io import decode_jpeg

    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in jpegs]
    size = contract.INPUT_SHAPE[0]

    def run(chunk: list[torch.Tensor], scorer: Callable[[torch.Tensor], torch.Tensor]) -> Any:
        decoded = decode_jpeg(chunk, device=device)
        return scorer(_resized(list(decoded), size))

    with torch.inference_mode():
        gpu_path = run(encoded, reference).float().cpu().numpy().reshape(-1)
        cpu_inputs = torch.from_numpy(np.stack([_decode(data) for data in jpegs])).to(device)
        cpu_path = reference(cpu_inputs).float().cpu().numpy().reshape(-1)
        repeated = encoded * batch  # every image in ``batch`` batches of ``batch``
        chunks = [repeated[i : i + batch] for i in range(0, len(repeated), batch)]
        for chunk in chunks[:2]:
            run(chunk, score)
        _sync(device)
        done, started, cpu_started = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - started < seconds or done == 0:
            for chunk in chunks:
                run(chunk, score)
                done += len(chunk)
            _sync(device)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    delta = np.abs(gpu_path - cpu_path)
    return {
        "images_per_s": done / wall,
        "cpu_ms": cpu / done * 1000,
        "max_delta": float(delta.max()),
        "median_delta": float(np.median(delta)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="1", help="model version folder in model_repository")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--batches", default="1,8,32,64,128,256", help="comma-separated sizes")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per cell")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    parser.add_argument("--images", type=int, default=48, help="generated images to decode")
    parser.add_argument("--passes", type=int, default=20, help="passes over them, all cores")
    cpus = os.cpu_count() or 1
    parser.add_argument(
        "--processes", default=f"{cpus},{max(1, cpus // 2)}", help="decoding processes, a list"
    )
    parser.add_argument("--pipeline-batch", type=int, default=64, help="batch while decoding")
    args = parser.parse_args()
    # The decoding processes fork now, before this process touches CUDA (a forked CUDA context
    # is unusable), and so start with everything imported.
    fork = multiprocessing.get_context("fork")
    pools = {n: fork.Pool(n) for n in dict.fromkeys(int(n) for n in args.processes.split(","))}
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
        last = HalfExportWrapper(copy.deepcopy(detector)).to(device).half().eval()
        forms["eager fp16 channels_last"] = last.to(memory_format=torch.channels_last)

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
    scorer_name = "TorchScript fp16 (Triton libtorch)" if device == "cuda" else "eager fp32"
    formats = make_images(args.images)
    images = [data for _, data in formats]
    mean_mp = np.mean([MEGAPIXELS[i % len(MEGAPIXELS)] for i in range(len(images))])
    lines += [
        "",
        f"decode (load_image, draft) of {len(images)} images, 0.1-3 MP (mean {mean_mp:.2f} MP),"
        f" every third PNG, on {os.cpu_count()} CPUs; scorer {scorer_name}, batch "
        f"{args.pipeline_batch}; images/s, one figure per round",
        f"{'processes':>9} {'decode, one core':>22} {'decode, all processes':>22} "
        f"{'decode + score':>22}",
    ]
    for processes, pool in pools.items():
        with pool:
            rates = decode_and_score(
                forms[scorer_name],
                images,
                pool,
                device=device,
                batch=args.pipeline_batch,
                passes=args.passes,
            )
        lines.append(
            f"{processes:9d} "
            + " ".join(f"{' / '.join(f'{r:.0f}' for r in rates[k]):>22}" for k in rates)
        )
    jpegs = [data for fmt, data in formats if fmt == "JPEG"]
    try:
        found = device_decode_and_score(
            forms[scorer_name],
            fp32,
            jpegs,
            device=device,
            batch=args.pipeline_batch,
            seconds=args.seconds,
        )
    except Exception as exc:  # a torchvision without nvJPEG, say: the rest still counts
        lines += ["", f"JPEG decode on {device}: not available ({type(exc).__name__}: {exc})"]
    else:
        lines += [
            "",
            f"JPEG decode on {device} (torchvision decode_jpeg, full size) + resize there + "
            f"{scorer_name}, batch {args.pipeline_batch}, {len(jpegs)} JPEGs of the mix:",
            f"  {found['images_per_s']:.0f} images/s, {found['cpu_ms']:.2f} ms of this process's "
            f"CPU per image; |logit - service CPU decode| (fp32) max {found['max_delta']:.3f}, "
            f"median {found['median_delta']:.3f}",
        ]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
