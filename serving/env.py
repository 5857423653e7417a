"""Finds the bundled ``tritonserver`` and prepares what it needs: environment, backend folder,
checks of the repository and ports (what each requirement is for: docs/design.md, "Serving").
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from moderation import contract
from serving.backend import BACKEND_NAME, MODEL_PY

logger = logging.getLogger(__name__)

_INSTALL_HINT = "install the project's dependencies: pip install -e '.[test]' (nvidia-pytriton)"


class TritonStartError(RuntimeError):
    """The bundled server could not start or its model could not load; the message says why."""


@dataclass(frozen=True)
class BundledTriton:
    """Paths inside the nvidia-pytriton wheel that running ``tritonserver`` needs."""

    binary: Path
    libs: Path
    python_backend: Path
    stub: Path
    caches: Path

    def environment(self) -> dict[str, str]:
        """Returns the process environment for the binary (PATH and LD_LIBRARY_PATH set)."""
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        paths = [str(self.libs), libdir, env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = ":".join(p for p in paths if p)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        # One onnxruntime session per instance decides its own threads; keep BLAS from adding more.
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def install_backends(self, target: Path) -> Path:
        """Returns ``target`` holding the python backend plus our python-based onnxruntime."""
        python_dir = target / "python"
        python_dir.mkdir(parents=True)
        shutil.copy2(self.python_backend / "libtriton_python.so", python_dir)
        shutil.copy2(self.python_backend / "triton_python_backend_utils.py", python_dir)
        shutil.copy2(self.stub, python_dir / "triton_python_backend_stub")
        ours = target / BACKEND_NAME
        ours.mkdir()
        shutil.copy2(MODEL_PY, ours / "model.py")
        return target


def locate_bundled() -> BundledTriton:
    """Returns the bundled server's paths; raises TritonStartError saying what is missing."""
    _check_python_environment()
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError(f"the nvidia-pytriton package is not installed; {_INSTALL_HINT}")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    bundled = BundledTriton(
        binary=root / "bin" / "tritonserver",
        libs=root.parent.parent / "nvidia_pytriton.libs",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
        caches=root / "caches",
    )
    if not os.access(bundled.binary, os.X_OK):
        raise TritonStartError(f"expected an executable tritonserver at {bundled.binary}")
    if not bundled.stub.exists():
        found = sorted(p.name for p in bundled.stub.parent.parent.glob("*") if p.is_dir())
        raise TritonStartError(
            f"the wheel has no python backend stub for Python {version} (it has {found}); "
            "run dfmod with one of those Python versions"
        )
    if not (bundled.python_backend / "libtriton_python.so").exists():
        raise TritonStartError(f"expected the python backend in {bundled.python_backend}")
    if not bundled.libs.is_dir():
        raise TritonStartError(f"expected the server's libraries in {bundled.libs}")
    return bundled


def _check_python_environment() -> None:
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        raise TritonStartError(
            f"numpy {numpy.__version__} is installed; the bundled python backend needs numpy<2 "
            "(with numpy 2 it returns empty tensors): pip install 'numpy<2'"
        )
    if importlib.util.find_spec("onnxruntime") is None:
        raise TritonStartError(f"onnxruntime is not installed; {_INSTALL_HINT}")


def check_repository(repository: Path, model_name: str) -> list[int]:
    """Returns the model's version numbers; raises TritonStartError if it cannot be served."""
    model_dir = Path(repository) / model_name
    config = model_dir / "config.pbtxt"
    if not config.is_file():
        raise TritonStartError(
            f"expected the model configuration {config}; is {repository} a model repository?"
        )
    versions = sorted(
        int(p.name)
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / contract.ONNX_FILENAME).is_file()
    )
    if not versions:
        raise TritonStartError(
            f"{model_dir} has no version folder with {contract.ONNX_FILENAME}; "
            "export one first (dfmod export)"
        )
    return versions


def port_in_use(host: str, port: int) -> bool:
    """Returns whether something already listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_ports(count: int) -> list[int]:
    """Returns ``count`` distinct free TCP ports on 127.0.0.1 (held open together while chosen)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
