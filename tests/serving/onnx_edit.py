"""Builds a second model version for reload tests: version N's graph with its logits shifted.

Adding a constant after the final layer is the same as changing the final bias, works for any
exported graph, and makes the new version's answers recognisable (logit_v2 = logit_v1 + delta).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from moderation import contract


def shift_logits(source: Path, target: Path, *, delta: float) -> Path:
    """Writes ``target`` = the ONNX model at ``source`` with ``delta`` added to its output."""
    model = onnx.load(str(source))
    graph = model.graph
    output = next(o for o in graph.output if o.name == contract.OUTPUT_NAME)
    inner = f"{contract.OUTPUT_NAME}_before_shift"
    for node in graph.node:
        node.output[:] = [inner if name == output.name else name for name in node.output]
    graph.initializer.append(numpy_helper.from_array(np.array([delta], np.float32), "logit_shift"))
    graph.node.append(helper.make_node("Add", [inner, "logit_shift"], [output.name]))
    onnx.checker.check_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target


def add_shifted_version(model_dir: Path, *, delta: float) -> int:
    """Adds version N+1 (N = highest version) with shifted logits; returns N+1."""
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
    latest, new = model_dir / str(versions[-1]), model_dir / str(versions[-1] + 1)
    staging = model_dir / f".staging-{new.name}"
    shift_logits(latest / contract.ONNX_FILENAME, staging / contract.ONNX_FILENAME, delta=delta)
    metadata = contract.ModelMetadata.read(latest)
    replace(metadata, version=int(new.name), trained_on=f"v{latest.name} + {delta}").write(staging)
    staging.rename(new)  # appear complete, never half-written, to a concurrent load
    return int(new.name)
