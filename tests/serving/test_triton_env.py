"""What the bundled server needs is found, laid out and explained without starting it."""

from __future__ import annotations

import importlib.util
import sys
import sysconfig
from pathlib import Path

import numpy
import pytest

from serving import env as triton_env
from serving.backend import MODEL_PY
from serving.env import TritonStartError, check_repository, locate_bundled


def test_bundled_server_is_found_with_a_stub_for_this_python() -> None:
    bundled = locate_bundled()
    assert bundled.binary.name == "tritonserver" and bundled.binary.is_file()
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in str(bundled.stub)


def test_environment_puts_this_interpreter_first_and_the_libraries_on_the_path() -> None:
    bundled = locate_bundled()
    env = bundled.environment()
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    libraries = env["LD_LIBRARY_PATH"].split(":")
    assert libraries[0] == str(bundled.libs)
    assert sysconfig.get_config_var("LIBDIR") in libraries


def test_backend_folder_holds_real_files(tmp_path: Path) -> None:
    target = locate_bundled().install_backends(tmp_path / "backends")
    expected = [
        "python/libtriton_python.so",
        "python/triton_python_backend_utils.py",
        "python/triton_python_backend_stub",
        "onnxruntime/model.py",
    ]
    for name in expected:
        path = target / name
        assert path.is_file() and not path.is_symlink(), name  # Triton refuses escaping links
    assert (target / "onnxruntime/model.py").read_text() == MODEL_PY.read_text()


def test_missing_wheel_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        triton_env.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pytriton" else real(name, *a),
    )
    with pytest.raises(TritonStartError, match=r"nvidia-pytriton package is not installed"):
        locate_bundled()


def test_numpy_2_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numpy, "__version__", "2.1.0")
    with pytest.raises(TritonStartError, match=r"needs numpy<2"):
        locate_bundled()


def test_repository_checks(tmp_path: Path) -> None:
    with pytest.raises(TritonStartError, match="expected the model configuration"):
        check_repository(tmp_path, "deepfake_detector")
    model = tmp_path / "deepfake_detector"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text("")
    with pytest.raises(TritonStartError, match=r"no version folder with model\.onnx"):
        check_repository(tmp_path, "deepfake_detector")
    (model / "1" / "model.onnx").write_bytes(b"")
    (model / "3").mkdir()
    (model / "3" / "model.onnx").write_bytes(b"")
    (model / "notes").mkdir()
    assert check_repository(tmp_path, "deepfake_detector") == [1, 3]
