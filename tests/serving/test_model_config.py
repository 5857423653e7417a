"""The committed config.pbtxt parses with Triton's own schema and follows the I/O contract."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from moderation import contract
from moderation.settings import PROJECT_ROOT

CONFIG = PROJECT_ROOT / "model_repository" / contract.MODEL_NAME / "config.pbtxt"


@pytest.fixture(scope="module")
def config() -> mc.ModelConfig:
    return text_format.Parse(CONFIG.read_text(), mc.ModelConfig())


def test_io_follows_the_contract(config: mc.ModelConfig) -> None:
    assert config.name == contract.MODEL_NAME
    (image,) = config.input
    logit, cam = config.output
    assert (image.name, image.data_type) == (contract.INPUT_NAME, mc.TYPE_UINT8)
    assert tuple(image.dims) == contract.INPUT_SHAPE
    assert (logit.name, logit.data_type, tuple(logit.dims)) == (
        contract.OUTPUT_NAME,
        mc.TYPE_FP32,
        (1,),
    )
    assert (cam.name, cam.data_type, tuple(cam.dims)) == (
        contract.CAM_NAME,
        mc.TYPE_FP32,
        contract.CAM_SHAPE,
    )
    assert config.max_batch_size >= 32


def test_one_backend_name_for_both_deployments(config: mc.ModelConfig) -> None:
    # NGC serves "onnxruntime" natively; the bundled server through serving/backend.
    assert config.backend == "onnxruntime"
    assert not config.platform and not config.runtime
    assert all(g.kind == mc.ModelInstanceGroup.KIND_AUTO for g in config.instance_group)


def test_batching_queue_versions_and_warmup(config: mc.ModelConfig) -> None:
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) and batching.max_queue_delay_microseconds > 0
    assert max(batching.preferred_batch_size) <= config.max_batch_size
    policy = batching.default_queue_policy
    assert policy.max_queue_size > 0 and policy.timeout_action == mc.ModelQueuePolicy.REJECT
    assert config.version_policy.latest.num_versions == 1
    assert {w.batch_size for w in config.model_warmup} >= {1}
    for warmup in config.model_warmup:
        assert set(warmup.inputs) == {contract.INPUT_NAME}


def test_thread_parameters_are_numbers(config: mc.ModelConfig) -> None:
    for key in ("intra_op_thread_count", "inter_op_thread_count"):
        assert int(config.parameters[key].string_value) >= 1
