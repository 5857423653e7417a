"""End to end with Triton down: the worker retries on its schedule, then ends the job failed.

The stack's worker points at a closed loopback port and has a short retry schedule, so the
submission reaches ``failed`` / ``inference_unavailable`` in seconds instead of minutes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.media import image_bytes
from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import E2E_ENV, Stack, closed_port, embedded_stack

pytestmark = pytest.mark.integration

RETRY_SCHEDULE = "0.2,0.5,1"


@pytest.fixture(scope="module")
def dead_triton_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        **E2E_ENV,
        "DFMOD_TRITON_HOST": "127.0.0.1",
        "DFMOD_TRITON_GRPC_PORT": str(closed_port()),
        "DFMOD_TRITON_RETRIES": "0",
        "DFMOD_TRITON_TIMEOUT_S": "1",
        "DFMOD_SCORE_RETRY_SCHEDULE": RETRY_SCHEDULE,
    }
    with embedded_stack(tmp_path_factory.mktemp("stack-dead-triton"), env) as stack:
        yield stack


def test_inference_unavailable__failed_after_retries(
    dead_triton_stack: Stack, callback_receiver: CallbackReceiver
) -> None:
    stack = dead_triton_stack
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    response = stack.submit_file(
        tenant.api_key, image_bytes(seed=9), callback_url=callback_receiver.url()
    )
    assert response.status_code == 202, response.text
    final = stack.wait_final(tenant.api_key, response.json()["id"], timeout_s=60)
    assert (final["status"], final["failure"]["reason"]) == ("failed", "inference_unavailable")
    retries = len(RETRY_SCHEDULE.split(","))
    assert f"gave up after {retries + 1} attempts" in final["failure"]["detail"]
    (callback,) = callback_receiver.wait_for(1, timeout_s=30)
    assert callback.signature_ok
    assert callback.json()["data"]["failure"]["reason"] == "inference_unavailable"
