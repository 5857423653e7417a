"""The python-based backend ``onnxruntime`` of the bundled CPU server (docs/design.md, "Serving").

Installed as ``<backends>/onnxruntime/model.py``; runs ``<version>/model.onnx`` on onnxruntime CPU
inside the python backend stub, so it imports only numpy, onnxruntime and
``triton_python_backend_utils``. Names, dtypes, file name and threads come from the model config.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

DEFAULT_MODEL_FILENAME = "model.onnx"  # what Triton's own onnxruntime backend looks for


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


class TritonPythonModel:
    """Runs ``<version>/<default_model_filename>`` on onnxruntime, CPU, one batch per execute."""

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
            error = pb_utils.TritonError(f"onnxruntime failed on a batch of {len(requests)}: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]

    def _execute(self, requests: list[Any]) -> list[Any]:
        """Concatenates the batched requests, runs onnxruntime once, splits the answers."""
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
