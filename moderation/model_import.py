"""Bring-your-own detector: ``dfmod model import NAME MODEL.onnx --manifest MANIFEST.yaml``.

Checks the manifest's declarations against the graph and an onnxruntime run, wraps the graph to
take what every dfmod model takes and answer a ``logit``, and writes it as a new Triton model
version. Needs numpy, onnx, onnxruntime and PyYAML, no torch (docs/design.md, "Several detectors").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from moderation import contract
from moderation.version_folders import next_version, version_numbers, write_version

MANIFEST_FILENAME = "manifest.yaml"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
LAYOUTS = ("NCHW", "NHWC")
DTYPES = {"float32": 1, "float16": 10, "uint8": 2}  # onnx TensorProto element types
COLOUR_ORDERS = ("RGB", "BGR")
RESIZES = ("bilinear", "bicubic", "nearest", "lanczos", "box")
MEANINGS = ("logit", "probability", "class_index")
MIN_SIZE, MAX_SIZE = 16, 1024
PROBABILITY_EPS = 1e-7
PARITY_TOLERANCE = 1e-3
PREFIX = "dfmod_wrap_"


class ManifestError(ValueError):
    """The manifest is malformed or does not describe the graph; the message names the field."""


@dataclass(frozen=True)
class Manifest:
    """A validated manifest (see ``docs/design.md``, "Importing a detector")."""

    input_name: str
    layout: str
    size: int
    dtype: str
    colour_order: str = "RGB"
    resize: str = "bilinear"
    pixel_range: float = 1.0  # the float model's pixels span [0, pixel_range] before mean/std
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    output_name: str = ""
    meaning: str = "logit"
    fake_index: int | None = None  # class_index: which class is "fake"
    scores: str = "logits"  # class_index: "logits" (softmax applied) or "probabilities"
    licence: str = ""
    provenance: str = ""
    sha256: str | None = None
    demo_weights: bool = False
    pass_below: float = 0.3
    flag_at: float = 0.8
    temperature: float = 1.0
    raw: dict[str, Any] = field(default_factory=dict)


def _need(section: dict[str, Any], key: str, where: str) -> Any:
    if key not in section or section[key] in (None, ""):
        raise ManifestError(f"the manifest has no {where}.{key}")
    return section[key]


def _choice(value: Any, allowed: tuple[str, ...], where: str, *, upper: bool = False) -> str:
    text = str(value).upper() if upper else str(value).lower()
    if text not in allowed:
        raise ManifestError(f"{where} is {value!r}; expected one of {', '.join(allowed)}")
    return text


def _triple(value: Any, where: str) -> tuple[float, float, float]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ManifestError(f"{where} must be a list of 3 numbers (one per channel)")
    try:
        triple = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"{where} must be a list of 3 numbers (one per channel)") from exc
    return triple  # type: ignore[return-value]


def _size(value: Any) -> int:
    if isinstance(value, list | tuple):
        if len(value) != 2 or value[0] != value[1]:
            raise ManifestError(
                f"input.size is {value}; dfmod serves square inputs: give one number or [S, S]"
            )
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_SIZE <= value <= MAX_SIZE:
        raise ManifestError(f"input.size is {value!r}; expected an integer {MIN_SIZE}..{MAX_SIZE}")
    return value


def parse_manifest(data: Any) -> Manifest:
    """Returns a :class:`Manifest` from parsed YAML; raises ManifestError naming the bad field."""
    if not isinstance(data, dict):
        raise ManifestError("the manifest must be a YAML mapping with input, output and weights")
    for section in ("input", "output", "weights"):
        if not isinstance(data.get(section), dict):
            raise ManifestError(f"the manifest has no {section} section")
    inp, out, weights = data["input"], data["output"], data["weights"]
    dtype = _choice(_need(inp, "dtype", "input"), tuple(DTYPES), "input.dtype")
    norm = inp.get("normalisation", inp.get("normalization", "none"))
    mean = std = None
    if norm not in (None, "none"):
        if not isinstance(norm, dict):
            raise ManifestError("input.normalisation must be 'none' or {mean: [..], std: [..]}")
        mean = _triple(norm.get("mean"), "input.normalisation.mean")
        std = _triple(norm.get("std"), "input.normalisation.std")
        if any(s <= 0 for s in std):
            raise ManifestError("input.normalisation.std must be positive")
        if dtype == "uint8":
            raise ManifestError("input.dtype uint8 takes raw pixels; normalisation must be 'none'")
    pixel_range = float(inp.get("pixel_range", 1.0))
    if pixel_range not in (1.0, 255.0):
        raise ManifestError(f"input.pixel_range is {pixel_range}; expected 1 or 255")
    meaning = _choice(_need(out, "meaning", "output"), MEANINGS, "output.meaning")
    fake_index = None
    scores = "logits"
    if meaning == "class_index":
        fake_index = out.get("fake_index")
        if isinstance(fake_index, bool) or not isinstance(fake_index, int) or fake_index < 0:
            raise ManifestError("output.meaning class_index needs output.fake_index (an integer)")
        scores = _choice(out.get("scores", "logits"), ("logits", "probabilities"), "output.scores")
    licence = str(_need(weights, "licence", "weights")).strip()
    provenance = str(_need(weights, "provenance", "weights")).strip()
    sha256 = weights.get("sha256")
    if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", str(sha256).lower()):
        raise ManifestError("weights.sha256 must be 64 hex digits")
    thresholds = data.get("thresholds") or {}
    pass_below = float(thresholds.get("pass_below", 0.3))
    flag_at = float(thresholds.get("flag_at", 0.8))
    if not 0 <= pass_below <= flag_at <= 1:
        raise ManifestError("thresholds: expected 0 <= pass_below <= flag_at <= 1")
    temperature = float(data.get("temperature", 1.0))
    if temperature <= 0:
        raise ManifestError("temperature must be positive")
    return Manifest(
        input_name=str(_need(inp, "name", "input")),
        layout=_choice(_need(inp, "layout", "input"), LAYOUTS, "input.layout", upper=True),
        size=_size(_need(inp, "size", "input")),
        dtype=dtype,
        colour_order=_choice(
            inp.get("colour_order", inp.get("color_order", "RGB")),
            COLOUR_ORDERS,
            "input.colour_order",
            upper=True,
        ),
        resize=_choice(inp.get("resize", "bilinear"), RESIZES, "input.resize"),
        pixel_range=pixel_range,
        mean=mean,
        std=std,
        output_name=str(_need(out, "name", "output")),
        meaning=meaning,
        fake_index=fake_index,
        scores=scores,
        licence=licence,
        provenance=provenance,
        sha256=str(sha256).lower() if sha256 else None,
        demo_weights=bool(weights.get("demo", False)),
        pass_below=pass_below,
        flag_at=flag_at,
        temperature=temperature,
        raw=data,
    )


def read_manifest(path: Path) -> Manifest:
    """Reads and parses a manifest file."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read the manifest {Path(path).name}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"the manifest {Path(path).name} is not valid YAML: {exc}") from exc
    return parse_manifest(data)


# -- the graph --------------------------------------------------------------------------------


def _dims(value_info: Any) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def _show(dims: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _mismatch(field_name: str, declared: Any, actual: str) -> ManifestError:
    return ManifestError(f"manifest {field_name} is {declared}, but {actual}")


def check_signature(model: Any, manifest: Manifest) -> int | None:
    """Checks names, dtype, layout, size and output shape against the graph's signature.

    Returns the graph's static batch size (None when the batch axis is dynamic).
    """
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    names = [i.name for i in inputs]
    if manifest.input_name not in names:
        raise _mismatch("input.name", repr(manifest.input_name), f"the graph's inputs are {names}")
    if len(inputs) != 1:
        raise ManifestError(f"the graph has {len(inputs)} inputs {names}; dfmod feeds exactly one")
    graph_input = inputs[0]
    elem = graph_input.type.tensor_type.elem_type
    if elem != DTYPES[manifest.dtype]:
        actual = {v: k for k, v in DTYPES.items()}.get(elem, f"ONNX type {elem}")
        raise _mismatch("input.dtype", manifest.dtype, f"the graph's input is {actual}")
    dims = _dims(graph_input)
    if len(dims) != 4:
        raise _mismatch(
            "input.layout", manifest.layout, f"the graph's input has shape {_show(dims)}"
        )
    channel_axis, spatial = (1, (2, 3)) if manifest.layout == "NCHW" else (3, (1, 2))
    if isinstance(dims[channel_axis], int) and dims[channel_axis] != 3:
        raise _mismatch(
            "input.layout",
            f"{manifest.layout} (3 channels on axis {channel_axis})",
            f"the graph's input has shape {_show(dims)}",
        )
    for axis in spatial:
        if isinstance(dims[axis], int) and dims[axis] != manifest.size:
            raise _mismatch(
                "input.size",
                f"{manifest.size} ({manifest.layout})",
                f"the graph's input has shape {_show(dims)}",
            )
    outputs = {o.name: o for o in graph.output}
    if manifest.output_name not in outputs:
        raise _mismatch(
            "output.name", repr(manifest.output_name), f"the graph's outputs are {list(outputs)}"
        )
    out_dims = _dims(outputs[manifest.output_name])
    if manifest.meaning == "class_index":
        classes = out_dims[1] if len(out_dims) == 2 else None
        if len(out_dims) != 2 or (isinstance(classes, int) and classes < 2):
            raise _mismatch(
                "output.meaning", "class_index", f"the output has shape {_show(out_dims)}"
            )
        index = manifest.fake_index
        if isinstance(classes, int) and index is not None and index >= classes:
            raise _mismatch(
                "output.fake_index", index, f"the output has {classes} classes {_show(out_dims)}"
            )
    elif len(out_dims) not in (1, 2) or (
        len(out_dims) == 2 and isinstance(out_dims[1], int) and out_dims[1] != 1
    ):
        # One score per image: [N] or [N, 1] (a named second axis is checked by the run).
        raise _mismatch(
            "output.meaning",
            f"{manifest.meaning} (one score per image)",
            f"the output has shape {_show(out_dims)}",
        )
    batch = dims[0]
    return batch if isinstance(batch, int) else None


def _numpy_input(images: np.ndarray, manifest: Manifest) -> np.ndarray:
    """The preprocessing the wrapper does, in numpy: uint8 NHWC RGB -> the graph's input."""
    x = images
    if manifest.colour_order == "BGR":
        x = x[..., ::-1]
    if manifest.dtype != "uint8":
        x = x.astype(np.float32) * np.float32(manifest.pixel_range / 255.0)
        if manifest.mean is not None and manifest.std is not None:
            x = (x - np.asarray(manifest.mean, np.float32)) / np.asarray(manifest.std, np.float32)
        x = x.astype(np.float16 if manifest.dtype == "float16" else np.float32)
    if manifest.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def _logit_from(output: np.ndarray, manifest: Manifest) -> np.ndarray:
    out = output.astype(np.float64)
    if manifest.meaning == "class_index":
        assert manifest.fake_index is not None
        if manifest.scores == "logits":
            shifted = out - out.max(axis=1, keepdims=True)
            out = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        out = out[:, manifest.fake_index]
    out = out.reshape(-1)
    if manifest.meaning == "logit":
        return out
    p = np.clip(out, PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    return np.log(p) - np.log1p(-p)


def probe_images(size: int, count: int = 6, seed: int = 0) -> np.ndarray:
    """Returns test images uint8 [count, size, size, 3]: noise, black, white, a ramp, a checker."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    checker = ((np.indices((size, size)).sum(axis=0) // 4) % 2 * 255).astype(np.uint8)
    fixed = [
        np.zeros((size, size, 3), np.uint8),
        np.full((size, size, 3), 255, np.uint8),
        np.stack([ramp[None, :].repeat(size, 0)] * 3, axis=-1).astype(np.uint8),
        np.stack([checker] * 3, axis=-1),
    ]
    for index, image in enumerate(fixed[: max(0, count - 1)]):
        images[index + 1] = image
    return images


def _session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def check_run(model_bytes: bytes, manifest: Manifest, batch: int | None) -> np.ndarray:
    """Runs the original graph on probe images; checks the output's shape and range.

    Returns the logits the wrapper must reproduce.
    """
    images = probe_images(manifest.size, count=batch or 6)
    try:
        session = _session(model_bytes)
        feeds = {manifest.input_name: _numpy_input(images, manifest)}
        output = session.run([manifest.output_name], feeds)[0]
    except Exception as exc:  # onnxruntime's errors are all sorts; the message names the cause
        raise ManifestError(
            f"the graph does not run on the declared input ({manifest.layout} "
            f"{manifest.size}x{manifest.size} {manifest.dtype}): {str(exc)[:300]}"
        ) from exc
    output = np.asarray(output)
    if output.shape[0] != len(images):
        raise _mismatch(
            "output.name",
            repr(manifest.output_name),
            f"it answered shape {list(output.shape)} for {len(images)} images",
        )
    if manifest.meaning == "class_index":
        if (
            output.ndim != 2
            or manifest.fake_index is None
            or manifest.fake_index >= output.shape[1]
        ):
            raise _mismatch(
                "output.fake_index",
                manifest.fake_index,
                f"the output has shape {list(output.shape)}",
            )
    elif output.size != len(images):
        raise _mismatch(
            "output.meaning",
            f"{manifest.meaning} (one score per image)",
            f"the output has shape {list(output.shape)}",
        )
    if not np.all(np.isfinite(output)):
        raise ManifestError("the graph answered NaN or infinity on test images")
    probabilities = manifest.meaning == "probability" or (
        manifest.meaning == "class_index" and manifest.scores == "probabilities"
    )
    if probabilities and (output.min() < 0 or output.max() > 1):
        raise _mismatch(
            "output.meaning" if manifest.meaning == "probability" else "output.scores",
            "probability",
            f"the output spans [{output.min():.3g}, {output.max():.3g}] on test images; "
            "is it a logit?",
        )
    if probabilities and manifest.meaning == "class_index":
        sums = output.sum(axis=1)
        if not np.allclose(sums, 1.0, atol=1e-3):
            raise _mismatch("output.scores", "probabilities", "the class scores do not sum to 1")
    return _logit_from(output, manifest)


def _const(name: str, array: np.ndarray) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(array), name=PREFIX + name)


def wrap(model: Any, manifest: Manifest) -> Any:
    """Returns the graph wrapped: uint8 NHWC RGB ``image`` in, FP32 ``logit`` [N, 1] out."""
    from onnx import TensorProto, helper

    graph = model.graph
    pre: list[Any] = []
    post: list[Any] = []
    nodes, consts = pre, []

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [PREFIX + output], **attrs))
        return PREFIX + output

    x = contract.INPUT_NAME
    if manifest.colour_order == "BGR":
        consts.append(_const("bgr", np.array([2, 1, 0], dtype=np.int64)))
        x = node("Gather", [x, PREFIX + "bgr"], "bgr_image", axis=3)
    if manifest.dtype != "uint8":
        x = node("Cast", [x], "float_image", to=TensorProto.FLOAT)
        consts.append(_const("scale", np.array(manifest.pixel_range / 255.0, dtype=np.float32)))
        x = node("Mul", [x, PREFIX + "scale"], "scaled")
        if manifest.mean is not None and manifest.std is not None:
            consts.append(_const("mean", np.array(manifest.mean, dtype=np.float32)))
            consts.append(_const("std", np.array(manifest.std, dtype=np.float32)))
            x = node("Sub", [x, PREFIX + "mean"], "centred")
            x = node("Div", [x, PREFIX + "std"], "normalised")
        if manifest.dtype == "float16":
            x = node("Cast", [x], "half_image", to=TensorProto.FLOAT16)
    if manifest.layout == "NCHW":
        x = node("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    nodes.append(helper.make_node("Identity", [x], [manifest.input_name]))

    nodes = post
    y = node("Cast", [manifest.output_name], "float_output", to=TensorProto.FLOAT)
    if manifest.meaning == "class_index":
        if manifest.scores == "logits":
            y = node("Softmax", [y], "softmax", axis=1)
        consts.append(_const("fake_index", np.array([manifest.fake_index], dtype=np.int64)))
        y = node("Gather", [y, PREFIX + "fake_index"], "fake_column", axis=1)
    consts.append(_const("column", np.array([-1, 1], dtype=np.int64)))
    y = node("Reshape", [y, PREFIX + "column"], "column_scores")
    if manifest.meaning != "logit":
        consts.append(_const("low", np.array(PROBABILITY_EPS, dtype=np.float32)))
        consts.append(_const("high", np.array(1 - PROBABILITY_EPS, dtype=np.float32)))
        consts.append(_const("one", np.array(1.0, dtype=np.float32)))
        p = node("Max", [y, PREFIX + "low"], "p_low")
        p = node("Min", [p, PREFIX + "high"], "p")
        q = node("Sub", [PREFIX + "one", p], "q")
        y = node("Sub", [node("Log", [p], "log_p"), node("Log", [q], "log_q")], "log_odds")
    nodes.append(helper.make_node("Identity", [y], [contract.OUTPUT_NAME]))

    others = [i for i in graph.input if i.name != manifest.input_name]
    new_input = helper.make_tensor_value_info(
        contract.INPUT_NAME, TensorProto.UINT8, ["batch", manifest.size, manifest.size, 3]
    )
    new_output = helper.make_tensor_value_info(
        contract.OUTPUT_NAME, TensorProto.FLOAT, ["batch", 1]
    )
    wrapped_graph = helper.make_graph(
        [*pre, *graph.node, *post],
        graph.name or "imported",
        [new_input, *others],  # the original input is now produced by the first Identity
        [new_output],
        initializer=[*graph.initializer, *consts],
        value_info=list(graph.value_info),
    )
    wrapped = helper.make_model(
        wrapped_graph, opset_imports=list(model.opset_import), producer_name="dfmod model import"
    )
    wrapped.ir_version = model.ir_version
    return wrapped


# -- config and repository ---------------------------------------------------------------------


def render_config(name: str, size: int, *, max_batch_size: int = 32, instances: int = 1) -> str:
    """Returns the Triton config of an imported (wrapped) model: the deepfake_detector pattern."""
    batching = (
        """dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 1000
  default_queue_policy {
    max_queue_size: 128
    timeout_action: REJECT
    default_timeout_microseconds: 10000000
    allow_timeout_override: true
  }
}
"""
        if max_batch_size > 1
        else ""
    )
    return f"""# {name}: imported by `dfmod model import` (moderation/model_import.py). The graph is
# wrapped: image UINT8 [batch, {size}, {size}, 3] RGB -> logit FP32 [batch, 1]; the manifest's
# preprocessing runs inside it. Same serving choices as deepfake_detector/config.pbtxt.
name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch_size}

input [
  {{
    name: "{contract.INPUT_NAME}"
    data_type: TYPE_UINT8
    dims: [ {size}, {size}, 3 ]
  }}
]
output [
  {{
    name: "{contract.OUTPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ 1 ]
  }}
]

version_policy: {{ latest: {{ num_versions: 1 }} }}

instance_group [
  {{
    count: {instances}
    kind: KIND_AUTO
  }}
]

{batching}
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
parameters {{ key: "inter_op_thread_count" value: {{ string_value: "1" }} }}
"""


@dataclass(frozen=True)
class ImportResult:
    """Where the version went and what was checked."""

    name: str
    version: int
    path: Path
    size: int
    parity_max_abs: float


def import_model(
    *,
    name: str,
    onnx_path: Path,
    manifest_path: Path,
    repository: Path,
    version: int | None = None,
) -> ImportResult:
    """Validates, wraps and writes the model as a new version; raises ManifestError."""
    import onnx

    if not NAME_PATTERN.match(name):
        raise ManifestError(
            f"model name {name!r}: expected lower-case letters, digits and '_' (2-64 characters)"
        )
    manifest = read_manifest(manifest_path)
    try:
        raw = Path(onnx_path).read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read the model file {Path(onnx_path).name}: {exc}") from exc
    if manifest.sha256 and hashlib.sha256(raw).hexdigest() != manifest.sha256:
        raise _mismatch(
            "weights.sha256", manifest.sha256[:12] + "…", "the model file's SHA-256 differs"
        )
    try:
        model = onnx.load_from_string(raw)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises several types for a file that is not a model
        raise ManifestError(f"{Path(onnx_path).name} is not a valid ONNX model: {exc}") from exc
    batch = check_signature(model, manifest)
    expected = check_run(raw, manifest, batch)
    wrapped = wrap(model, manifest)
    try:
        onnx.checker.check_model(wrapped)
        wrapped_bytes = wrapped.SerializeToString()
        got = _session(wrapped_bytes).run(
            [contract.OUTPUT_NAME],
            {contract.INPUT_NAME: probe_images(manifest.size, len(expected))},
        )[0]
    except Exception as exc:
        raise ManifestError(f"the wrapped graph does not run: {str(exc)[:300]}") from exc
    parity = float(np.max(np.abs(got.reshape(-1) - expected)))
    if got.shape != (len(expected), 1) or parity > PARITY_TOLERANCE * max(
        1.0, np.abs(expected).max()
    ):
        raise ManifestError(f"the wrapped graph differs from the original by {parity:.3g}")
    model_dir = Path(repository) / name
    numbers = version_numbers(model_dir)
    if numbers and not any((model_dir / str(n) / MANIFEST_FILENAME).is_file() for n in numbers):
        raise ManifestError(
            f"{name} is a model exported by dfmod (no imported version); choose another name"
        )
    version = version or next_version(model_dir)
    if (model_dir / str(version)).exists():
        raise ManifestError(f"{name} already has version {version}; choose another")

    def fill(folder: Path) -> contract.ModelMetadata:
        (folder / contract.ONNX_FILENAME).write_bytes(wrapped_bytes)
        (folder / MANIFEST_FILENAME).write_text(yaml.safe_dump(manifest.raw, sort_keys=False))
        return _metadata(manifest, version, parity)

    config = render_config(name, manifest.size, max_batch_size=32 if batch is None else 1)
    target = write_version(model_dir, version, fill, config=config)
    return ImportResult(name, version, target, manifest.size, parity)


def _metadata(manifest: Manifest, version: int, parity: float) -> contract.ModelMetadata:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    return contract.ModelMetadata(
        version=version,
        temperature=manifest.temperature,
        pass_below=manifest.pass_below,
        flag_at=manifest.flag_at,
        trained_on=manifest.provenance,
        created_at=now,
        extra={
            "imported": True,
            "input_size": manifest.size,
            "resize": manifest.resize,
            "licence": manifest.licence,
            "provenance": manifest.provenance,
            "demo_weights": manifest.demo_weights,
            "wrapper_parity_max_abs": parity,
            "manifest": manifest.raw,
        },
    )
