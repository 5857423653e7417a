"""Dependencies point down: the ``moderation`` core imports no package above it, ``serving``
(Triton's client and launcher) imports only the core, and the API and training reach the worker
only through its enqueue module.

Every import statement counts, including those inside functions (lazy imports are still
dependencies).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The worker module the API and training may import: sending tasks by name.
WORKER_ENTRY_POINTS = ("worker.enqueue",)
# package -> (the packages it must not import, the modules of those it may)
FORBIDDEN: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "moderation": (("serving", "worker", "webhook_api", "training"), ()),
    "serving": (("worker", "webhook_api", "training"), ()),
    "webhook_api": (("worker",), WORKER_ENTRY_POINTS),
    "training": (("worker",), WORKER_ENTRY_POINTS),
}


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """Returns ``(line, module)`` for every module an import statement in ``path`` names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    relative_to = path.relative_to(root).with_suffix("").parts
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = list(relative_to[: len(relative_to) - node.level])
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # ``from worker import tasks`` imports worker.tasks
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _points_up(module: str, package: str) -> bool:
    forbidden, allowed = FORBIDDEN[package]
    return _within(module, forbidden) and not _within(module, allowed)


def layer_violations(package: str, root: Path = ROOT) -> list[str]:
    """Returns ``path:line: module`` for each import of ``package`` that points up."""
    bad = []
    for path in sorted((root / package).rglob("*.py")):
        for line, module in sorted(imported_modules(path, root)):
            if _points_up(module, package):
                bad.append(f"{path.relative_to(root)}:{line}: {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package: str) -> None:
    assert layer_violations(package) == []


def test_the_checker_sees_lazy_relative_and_from_imports(tmp_path: Path) -> None:
    """The walk finds imports inside functions, ``from x import y`` and relative imports."""
    (tmp_path / "moderation").mkdir()
    (tmp_path / "moderation" / "probe.py").write_text(
        "def f():\n"
        "    from worker.callbacks import deliver\n"
        "    import training.model\n"
        "from worker import tasks\n"
        "from ..webhook_api import review\n"
        "from .settings import Settings\n"
        "from worker.enqueue import TASK_SCORE\n"
    )
    assert layer_violations("moderation", tmp_path) == [
        "moderation/probe.py:2: worker.callbacks.deliver",
        "moderation/probe.py:3: training.model",
        "moderation/probe.py:4: worker.tasks",
        "moderation/probe.py:5: webhook_api.review",
        "moderation/probe.py:7: worker.enqueue.TASK_SCORE",  # the core sends no tasks
    ]
    assert not _points_up("worker.enqueue.publish", "webhook_api")
    assert _points_up("worker.enqueue_tricks", "webhook_api")
    assert _points_up("worker.tasks", "training")
    assert not _points_up("moderation.outbox", "training")
    assert not _points_up("serving.client", "training")
    assert _points_up("worker.metrics.JOINED_IMAGES", "serving")
    assert _points_up("worker.enqueue", "serving")  # serving sends no tasks either
    assert not _points_up("moderation.contract", "serving")
    assert _points_up("serving.server", "moderation")
