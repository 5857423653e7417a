"""Explanations on the default install: API and worker processes in which torch cannot be imported.

The stack's processes get a ``sitecustomize`` (first on ``PYTHONPATH``) that installs an import
hook refusing ``torch`` and ``torchvision`` as if they were not installed, so everything they do
here is what ``pip install -e .`` (no train extra) gets. The test proves it: ``import torch`` fails
in that environment, and no process of the API maps a torch library after the overlays were
drawn. Through the real stack and real Triton it checks that GET and the callback carry
``verdict.explanation``, that headless Chromium shows the overlay as a real image, and that the
overview lists version 1 from ``model_repository`` with its metrics and as the one Triton serves.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.browser import add_reviewer, everything_to_review, log_in, new_page, shot
from tests.fixtures.receiver import CallbackReceiver
from tests.fixtures.stack import E2E_ENV, Stack, embedded_stack, triton_env
from training.demo_data import make_fake

pytestmark = pytest.mark.integration

BLOCK_TORCH = '''
import importlib.abc, sys

class _NoTorch(importlib.abc.MetaPathFinder):
    """torch is not installed here: the default install (pip install -e .) has no train extra."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoTorch())
'''


@pytest.fixture(scope="module")
def stack(triton_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("no-torch-stack")
    blocker = root / "no_torch"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = {**triton_env(triton_server), **E2E_ENV, "PYTHONPATH": str(blocker)}
    with embedded_stack(root, env) as started:
        add_reviewer(started)
        yield started


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [pid], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _torch_mapped(pid: int) -> list[int]:
    """Returns the processes of the tree at ``pid`` that have a torch library mapped."""
    mapped = []
    for process in _descendants(pid):
        try:
            maps = Path(f"/proc/{process}/maps").read_text()
        except OSError:
            continue
        if "libtorch" in maps or "/torch/" in maps:
            mapped.append(process)
    return mapped


def test_torch_is_not_importable_in_the_stacks_environment(stack: Stack) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import torch"], env=stack.env, capture_output=True, timeout=60
    )
    assert probe.returncode != 0 and b"No module named 'torch'" in probe.stderr


def test_explanation_overlay_and_versions_without_torch(
    stack: Stack, browser: Any, callback_receiver: CallbackReceiver
) -> None:
    tenant = stack.tenant()
    everything_to_review(stack, tenant.id)
    callback_receiver.secret = tenant.secret
    data = make_fake(np.random.default_rng([5, 1]), 300)
    response = stack.submit_file(
        tenant.api_key, data, filename="fake.jpg", callback_url=callback_receiver.url("/hook")
    )
    assert response.status_code == 202, response.text
    item = response.json()["id"]
    body = stack.wait_final(tenant.api_key, item)
    assert body["status"] == "needs_review", body
    explanation = body["verdict"]["explanation"]
    assert np.array(explanation["cam"]).shape == (7, 7)
    assert explanation["regions"] and sum(r["share"] for r in explanation["regions"]) <= 1.0
    for region in explanation["regions"]:
        x0, y0, x1, y1 = region["box"]
        assert 0 <= x0 < x1 <= 300 and 0 <= y0 < y1 <= 300
    (sent,) = callback_receiver.wait_for(1, path="/hook", timeout_s=30)
    assert sent.signature_ok and sent.json()["data"]["verdict"]["explanation"] == explanation

    page = new_page(browser)
    log_in(page, stack.api_url)
    row = page.locator(f"li.item[data-id='{item}']")
    row.wait_for()
    page.keyboard.press("h")  # opens the current item's overlay, drawn from the stored map
    heatmap = row.locator("details.heatmap img")
    heatmap.wait_for()
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=heatmap.element_handle())
    size = heatmap.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [300, 300]  # the upright original, not the model input or a placard
    answer = page.request.get(f"{stack.api_url}/review/gradcam/{item}")
    assert answer.headers["content-type"] == "image/png" and answer.headers["x-heatmap"] == "drawn"
    assert "of the map at x" in row.inner_text()
    shot(page, "no-torch-01-overlay")

    page.goto(f"{stack.api_url}/review/overview")
    version = page.locator("table.repository tr[data-version='1']")
    assert version.locator("td.serving").inner_text() == "serving"
    assert "accuracy=0.857" in version.locator("td.metrics").inner_text()
    shot(page, "no-torch-02-overview")
    page.close()
    assert _torch_mapped(stack.procs["api"].pid) == []
    assert _torch_mapped(stack.procs["worker"].pid) == []
