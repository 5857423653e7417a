"""The python-based backend ``onnxruntime`` of the bundled CPU server (docs/design.md, "Serving").

Installed as ``<backends>/onnxruntime/model.py``; runs ``<version>/model.onnx`` on onnxruntime CPU
inside the python backend stub, so it imports only numpy, onnxruntime and
``triton_python_backend_utils``. Names, dtypes, file name and threads come from the model config.

Opt-in TorchScript path: when the config's ``default_model_filename`` ends in ``.pt``, that file is
loaded with ``torch.jit.load`` (torch imported only then) onto the instance's GPU (``KIND_GPU``),
else ``cuda`` when torch sees one, else the CPU; batches run under ``torch.inference_mode()`` and
outputs are cast to the config's dtypes. The file may name its outputs in an extra file
``output_names`` (comma-separated, ``torch.jit.save(..., _extra_files=...)``); without it the
module's outputs are taken in the config's order. benchmarks/bench_gpu_stack.py writes such files.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

DEFAULT_MODEL_FILENAME = "model.onnx"  # what Triton's own onnxruntime backend looks for
TORCHSCRIPT_SUFFIX = ".pt"  # a default_model_filename ending so runs on TorchScript instead
TORCHSCRIPT_OUTPUT_NAMES = "output_names"  # extra file in the .pt: its outputs, comma-separated


def _parameter(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value or default


def _session_options(config: dict[str, Any]) -> ort.SessionOptions:
    options = ort.SessionOptions()
    # Same parameter names as Triton's onnxruntime backend, so one config tunes both.
    options.intra_op_num_threads = int(_parameter(config, "intra_op_thread_count", "0"))
    options.inter_op_num_threads = int(_parameter(config, "inter_op_thread_count", "1"))
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _torch_device(args: dict[str, str], torch: Any) -> str:
    """Returns the instance's GPU for KIND_GPU, else ``cuda`` when torch sees one, else ``cpu``."""
    if args.get("model_instance_kind") == "GPU":
        return f"cuda:{args.get('model_instance_device_id', '0')}"
    return "cuda" if torch.cuda.is_available() else "cpu"


class _TorchScriptRunner:
    """A TorchScript module with ``session.run``'s shape: (output names, feeds) -> arrays."""

    def __init__(self, path: str, config: dict[str, Any], args: dict[str, str]) -> None:
        import torch  # only on this path: the default backend never loads torch

        self.torch = torch
        self.device = _torch_device(args, torch)
        if self.device == "cpu":
            threads = int(_parameter(config, "intra_op_thread_count", "0"))
            if threads > 0:
                torch.set_num_threads(threads)
        extra = {TORCHSCRIPT_OUTPUT_NAMES: ""}
        self.module = torch.jit.load(path, map_location=self.device, _extra_files=extra)
        self.module.eval()
        named = extra[TORCHSCRIPT_OUTPUT_NAMES]
        names = named.decode() if isinstance(named, bytes) else named
        self.module_outputs = [n for n in names.split(",") if n] or [
            o["name"] for o in config["output"]
        ]
        self.input_names = [i["name"] for i in config["input"]]
        missing = [o["name"] for o in config["output"] if o["name"] not in self.module_outputs]
        if missing:
            raise pb_utils.TritonModelException(
                f"{path} has outputs {self.module_outputs}; the config expects {missing}"
            )

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            tensors = [torch.from_numpy(feeds[n]).to(self.device) for n in self.input_names]
            got = self.module(*tensors)
            got = list(got) if isinstance(got, tuple | list) else [got]
            by_name = dict(zip(self.module_outputs, got, strict=False))
            return [by_name[name].float().cpu().numpy() for name in names]


class TritonPythonModel:
    """Runs ``<version>/<default_model_filename>`` on onnxruntime, CPU, one batch per execute
    (or a ``.pt`` file on TorchScript, see the module's docstring)."""

    session: Any  # ort.InferenceSession, or _TorchScriptRunner on the TorchScript path

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.inputs = [
            (i["name"], pb_utils.triton_string_to_numpy(i["data_type"])) for i in config["input"]
        ]
        self.outputs = [
            (o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]
        ]
        filename = config.get("default_model_filename") or DEFAULT_MODEL_FILENAME
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        self.runtime = "onnxruntime"
        if filename.endswith(TORCHSCRIPT_SUFFIX):
            if not os.path.isfile(path):
                raise pb_utils.TritonModelException(
                    f"expected the TorchScript file {path}; it does not exist"
                )
            self.runtime = "TorchScript"
            self.session = _TorchScriptRunner(path, config, args)
            return
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"expected the ONNX file {path}; it does not exist")
        self.session = ort.InferenceSession(
            path, _session_options(config), providers=["CPUExecutionProvider"]
        )
        self.session_inputs = {i.name for i in self.session.get_inputs()}
        missing = [name for name, _ in self.inputs if name not in self.session_inputs]
        if missing:
            raise pb_utils.TritonModelException(
                f"{path} has inputs {sorted(self.session_inputs)}; the config expects {missing}"
            )

    def execute(self, requests: list[Any]) -> list[Any]:
        """Returns one response per request; a failure answers every request with the error."""
        try:
            return self._execute(requests)
        except Exception as exc:  # the server must answer each request, never hang it
            message = f"{self.runtime} failed on a batch of {len(requests)}: {exc}"
            error = pb_utils.TritonError(message)
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]

    def _execute(self, requests: list[Any]) -> list[Any]:
        """Concatenates the batched requests, runs the model once, splits the answers."""
        feeds: dict[str, np.ndarray] = {}
        sizes: list[int] = []
        for name, dtype in self.inputs:
            parts = [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            feeds[name] = np.concatenate(parts).astype(dtype, copy=False)
            sizes = [len(p) for p in parts]
        names = [name for name, _ in self.outputs]
        results = self.session.run(names, feeds)
        offsets = np.cumsum([0, *sizes])
        responses = []
        for index in range(len(requests)):
            start, stop = offsets[index], offsets[index + 1]
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(result[start:stop].astype(dtype)))
                for (name, dtype), result in zip(self.outputs, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        self.session = None
