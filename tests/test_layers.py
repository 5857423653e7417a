"""Dependencies point down: the ``moderation`` core imports no package above it, ``serving``
(Triton's client and launcher) imports only the core, and the API and training reach the worker
only through its enqueue module.

Every import statement counts, including those inside functions (lazy imports are still
dependencies).

The test suite is layered too: fixtures come from the plugins in ``tests/fixtures/``, helpers from
importable modules, and no module imports from a conftest or from a test module (a fixture
imported that way is a second copy with its own scope, and a conftest is not a library).
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
    "worker": (("webhook_api", "training"), ()),
}
# The detectors' definitions: export, serving checks and any other user import them without
# pulling in the rest of training (only torch, torchvision and the model contract).
DETECTOR_DEFINITIONS = ("training/model.py", "training/residual.py")


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


@pytest.mark.parametrize("definition", DETECTOR_DEFINITIONS)
def test_detector_definitions_stand_alone(definition: str) -> None:
    first_party = ("moderation", "serving", "worker", "webhook_api", "training")
    imports = [m for _, m in imported_modules(ROOT / definition) if _within(m, first_party)]
    assert all(_within(m, ("moderation.contract",)) for m in imports), imports


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


# -- the test suite ------------------------------------------------------------------------------


def _is_forbidden(module: str) -> bool:
    """A conftest, or a test module (``test_*``), anywhere under the ``tests`` package."""
    parts = module.split(".")
    if parts[0] != "tests":
        return False
    # ``from tests.x import name``: the last part may be a name, not a module
    return any(p == "conftest" or p.startswith("test_") for p in parts[1:])


def suite_violations(root: Path = ROOT) -> list[str]:
    """Returns ``path:line: module`` for each import of a conftest or test module in tests/."""
    bad = []
    for path in sorted((root / "tests").rglob("*.py")):
        for line, module in sorted(imported_modules(path, root)):
            if _is_forbidden(module):
                bad.append(f"{path.relative_to(root)}:{line}: {module}")
    return bad


def test_no_module_imports_a_conftest_or_a_test_module() -> None:
    assert suite_violations() == []


def test_the_checker_sees_conftest_and_test_module_imports(tmp_path: Path) -> None:
    (tmp_path / "tests" / "worker").mkdir(parents=True)
    (tmp_path / "tests" / "worker" / "test_probe.py").write_text(
        "from tests.worker.conftest import WorkerEnv\n"
        "from tests.worker import conftest\n"
        "import tests.conftest\n"
        "def f():\n"
        "    from tests.dashboard.test_browser import browser\n"
        "from .conftest import image_bytes\n"
        "from tests.fixtures.worker import WorkerEnv\n"
        "from tests.ensemble import third_party\n"
    )
    assert suite_violations(tmp_path) == [
        "tests/worker/test_probe.py:1: tests.worker.conftest.WorkerEnv",
        "tests/worker/test_probe.py:2: tests.worker.conftest",
        "tests/worker/test_probe.py:3: tests.conftest",
        "tests/worker/test_probe.py:5: tests.dashboard.test_browser.browser",
        "tests/worker/test_probe.py:6: tests.worker.conftest.image_bytes",
    ]


def _defines_fixtures_or_hooks(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            if node.name.startswith("pytest_"):
                return True
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(target, ast.Attribute) and target.attr == "fixture":
                    return True
    return False


def test_every_fixture_module_is_a_registered_plugin(pytestconfig: pytest.Config) -> None:
    """A module in tests/fixtures/ with fixtures or hooks is a plugin the root conftest loads, so
    tests get its fixtures by name and never by importing them."""
    modules = sorted((ROOT / "tests" / "fixtures").glob("*.py"))
    with_fixtures = [f"tests.fixtures.{p.stem}" for p in modules if _defines_fixtures_or_hooks(p)]
    assert "tests.fixtures.database" in with_fixtures
    unregistered = [m for m in with_fixtures if not pytestconfig.pluginmanager.has_plugin(m)]
    assert unregistered == []
