"""``dfmod model import``: every declaration the graph can check is checked; a lie is refused."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from click.testing import CliRunner

from moderation import contract
from moderation.cli import main
from moderation.model_import import ManifestError, import_model, probe_images
from tests.ensemble import third_party


@pytest.fixture(scope="module")
def nchw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return third_party.export(tmp_path_factory.mktemp("onnx") / "nchw.onnx")


def _import(tmp_path: Path, onnx_file: Path, **changes: Any) -> Any:
    manifest = third_party.write_manifest(tmp_path / "manifest.yaml", **changes)
    return import_model(
        name="third", onnx_path=onnx_file, manifest_path=manifest, repository=tmp_path / "repo"
    )


def _reference(onnx_file: Path, images: np.ndarray, *, bgr: bool = False) -> np.ndarray:
    x = images[..., ::-1] if bgr else images
    x = (x.astype(np.float32) / 255 - np.float32(third_party.IMAGENET["mean"])) / np.float32(
        third_party.IMAGENET["std"]
    )
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixel_values": x.transpose(0, 3, 1, 2).astype(np.float32)})[0]


def _wrapped(path: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["logit"], {"image": images})[0]


def test_an_nchw_imagenet_model_is_wrapped_to_the_dfmod_contract(tmp_path: Path, nchw: Path):
    result = _import(tmp_path, nchw)
    assert (result.name, result.version, result.size) == ("third", 1, 96)
    images = np.random.default_rng(1).integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    got = _wrapped(result.path, images)
    assert got.shape == (3, 1) and got.dtype == np.float32
    np.testing.assert_allclose(got, _reference(nchw, images), atol=1e-4)
    config = (tmp_path / "repo" / "third" / "config.pbtxt").read_text()
    assert 'name: "third"' in config and "dims: [ 96, 96, 3 ]" in config
    assert "TYPE_UINT8" in config and 'name: "logit"' in config
    meta = contract.ModelMetadata.read(result.path)
    assert meta.extra["licence"] == "Apache-2.0" and meta.extra["input_size"] == 96
    assert meta.extra["demo_weights"] is False and meta.trained_on.startswith("fixed random")
    assert (result.path / "manifest.yaml").is_file()
    # A second import is the model's next version.
    assert _import(tmp_path, nchw).version == 2


def test_bgr_colour_order_is_swapped_inside_the_graph(tmp_path: Path, nchw: Path):
    result = _import(tmp_path, nchw, input={"colour_order": "BGR"})
    images = probe_images(96)
    np.testing.assert_allclose(
        _wrapped(result.path, images), _reference(nchw, images, bgr=True), atol=1e-4
    )


def test_probability_and_class_outputs_become_log_odds(tmp_path: Path):
    prob = third_party.export(tmp_path / "p.onnx", layout="NHWC", sigmoid=True, size=64)
    result = _import(
        tmp_path,
        prob,
        input={"layout": "NHWC", "size": 64, "normalisation": "none"},
        output={"meaning": "probability"},
    )
    images = probe_images(64)
    session = ort.InferenceSession(str(prob), providers=["CPUExecutionProvider"])
    p = session.run(None, {"pixel_values": images.astype(np.float32) / 255})[0][:, 0]
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)  # the wrapper's bound: |logit| <= 16.1
    np.testing.assert_allclose(_wrapped(result.path, images)[:, 0], np.log(p / (1 - p)), atol=1e-4)

    two = third_party.export(tmp_path / "c.onnx", classes=2)
    result = _import(tmp_path, two, output={"meaning": "class_index", "fake_index": 0})
    z = _reference(two, images := probe_images(96))
    p = np.clip(1 / (1 + np.exp(z[:, 1] - z[:, 0])), 1e-7, 1 - 1e-7)
    np.testing.assert_allclose(_wrapped(result.path, images)[:, 0], np.log(p / (1 - p)), atol=1e-3)


LIES = [
    ({"input": {"name": "input_1"}}, "input.name is 'input_1'"),
    ({"input": {"layout": "NHWC"}}, "input.layout is NHWC"),
    ({"input": {"size": 224}}, "input.size is 224"),
    ({"input": {"dtype": "float16"}}, "input.dtype is float16"),
    ({"input": {"dtype": "uint8", "normalisation": "none"}}, "input.dtype is uint8"),
    ({"output": {"name": "prob"}}, "output.name is 'prob'"),
    ({"output": {"meaning": "probability"}}, "output.meaning is probability"),
    ({"output": {"meaning": "class_index", "fake_index": 1}}, "output.meaning is class_index"),
    ({"weights": {"licence": "", "provenance": "x"}}, "weights.licence"),
    ({"weights": {"licence": "MIT"}}, "weights.provenance"),
    ({"input": {"layout": "CHW"}}, "input.layout is 'CHW'"),
]


@pytest.mark.parametrize(("changes", "named"), LIES, ids=[n for _, n in LIES])
def test_a_lying_manifest_is_refused_naming_the_mismatch(
    tmp_path: Path, nchw: Path, changes: dict[str, Any], named: str
):
    if "weights" in changes:
        third_party.write_manifest(tmp_path / "manifest.yaml")
        data = yaml.safe_load((tmp_path / "manifest.yaml").read_text())
        data["weights"] = changes["weights"]
        (tmp_path / "m2.yaml").write_text(yaml.safe_dump(data))
        with pytest.raises(ManifestError, match="weights") as info:
            import_model(
                name="third",
                onnx_path=nchw,
                manifest_path=tmp_path / "m2.yaml",
                repository=tmp_path / "repo",
            )
    else:
        with pytest.raises(ManifestError) as info:
            _import(tmp_path, nchw, **changes)
    assert named in str(info.value)
    assert not (tmp_path / "repo" / "third").exists()


def test_a_wrong_weights_hash_and_class_index_are_refused(tmp_path: Path, nchw: Path):
    digest = hashlib.sha256(b"other weights").hexdigest()
    with pytest.raises(ManifestError, match=r"weights\.sha256"):
        _import(tmp_path, nchw, weights={"sha256": digest})
    good = hashlib.sha256(nchw.read_bytes()).hexdigest()
    assert _import(tmp_path, nchw, weights={"sha256": good}).version == 1
    two = third_party.export(tmp_path / "c.onnx", classes=2)
    with pytest.raises(ManifestError, match=r"output.fake_index is 2, but the output has 2"):
        _import(tmp_path, two, output={"meaning": "class_index", "fake_index": 2})


def test_the_cli_refuses_with_the_reason_and_no_traceback(tmp_path: Path, nchw: Path):
    manifest = third_party.write_manifest(tmp_path / "m.yaml", input={"size": 128})
    repo = tmp_path / "repo"
    args = ["model", "import", "third", str(nchw), "--manifest", str(manifest)]
    result = CliRunner().invoke(main, [*args, "--repository", str(repo)])
    assert result.exit_code == 1
    assert "refused: manifest input.size is 128" in result.output
    assert "Traceback" not in result.output and not repo.exists()
    third_party.write_manifest(manifest)
    result = CliRunner().invoke(main, [*args, "--repository", str(repo)])
    assert result.exit_code == 0, result.output
    assert "imported third version 1 (96x96" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed")
    args[-1] = str(bad)
    result = CliRunner().invoke(main, [*args, "--repository", str(repo)])
    assert result.exit_code == 1 and "not valid YAML" in result.output


def test_a_built_in_model_cannot_be_overwritten_by_an_import(tmp_path: Path, nchw: Path):
    built_in = tmp_path / "repo" / "deepfake_detector" / "1"
    built_in.mkdir(parents=True)
    (built_in / "model.onnx").write_bytes(b"exported by dfmod")
    manifest = third_party.write_manifest(tmp_path / "manifest.yaml")
    with pytest.raises(ManifestError, match="deepfake_detector is a model exported by dfmod"):
        import_model(
            name="deepfake_detector",
            onnx_path=nchw,
            manifest_path=manifest,
            repository=tmp_path / "repo",
        )
    assert sorted(p.name for p in built_in.parent.iterdir()) == ["1"]
