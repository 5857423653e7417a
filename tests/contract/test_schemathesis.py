"""``schemathesis run --checks all`` against the running stack, as a platform engineer would.

Every phase runs (examples, coverage, fuzzing, and stateful sequences that follow the document's
links from POST to GET), with every check: no server error, statuses, content types, headers and
response bodies as documented, invalid data refused, valid data accepted, authentication not
ignored, unsupported methods answered 405. The settings and the two hooks the run uses are in
``tests/contract/schemathesis.toml`` and ``schemathesis_hooks.py``, each saying why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).parent
MAX_EXAMPLES = 60


def test_schemathesis_all_checks_pass_against_the_stack(
    stack: Stack, callback_receiver: CallbackReceiver, tmp_path: Path
) -> None:
    tenant = stack.tenant()
    callback_receiver.secret = tenant.secret
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.contract.schemathesis_hooks",
        "DFMOD_FUZZ_URL": callback_receiver.url("/fuzz"),
        "PYTHONPATH": str(HERE.parent.parent),
    }
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{stack.api_url}/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {tenant.api_key}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "20",
        "--workers",
        "1",
        "--no-shrink",
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    run = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-12000:] + "\n" + stack.log_tail()
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅  {phase}" in output, output[-4000:]
    assert "Operations:       7 selected / 7 total" in output, output[:2000]
