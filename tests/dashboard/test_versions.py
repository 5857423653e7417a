"""The overview lists every version folder of the model repository with its metadata's metrics,
before any deployment was recorded; which one serves is asked of Triton (here: unreachable)."""

from __future__ import annotations

import shutil
from pathlib import Path

from flask.testing import FlaskClient

from moderation.contract import ModelMetadata
from moderation.settings import PROJECT_ROOT, Settings
from tests.fixtures.flask_app import app_settings, login
from webhook_api.versions import repository_view

COMMITTED = PROJECT_ROOT / "model_repository" / "deepfake_detector"


def test_overview__committed_version_1_with_metrics_on_a_fresh_install(
    client: FlaskClient, settings: Settings
) -> None:
    login(client)
    page = client.get("/review/overview").get_data(as_text=True)
    assert "No model versions recorded" not in page
    row = page.split('data-version="1"', 1)[1].split("</tr>", 1)[0]
    assert "accuracy=0.857" in row and "roc_auc=0.903" in row and "cam output" in row
    assert "unknown" in row  # Triton (port 1 here) did not answer: said, not guessed
    assert "which version serves is unknown" in page


def test_repository_view__every_folder_newest_first_and_unreadable_metadata_said(
    tmp_path: Path,
) -> None:
    repository = tmp_path / "repo"
    model_dir = repository / "deepfake_detector"
    model_dir.mkdir(parents=True)
    shutil.copy2(COMMITTED / "config.pbtxt", model_dir / "config.pbtxt")
    for version in (1, 2, 10):
        (model_dir / str(version)).mkdir()
    ModelMetadata(version=2, metrics={"accuracy": 0.75, "split": "test"}).write(model_dir / "2")
    (model_dir / "10" / "metadata.json").write_text("{not json")
    (model_dir / ".11.staging").mkdir()  # a deploy in progress is not a version yet
    settings = app_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    view = repository_view(settings.replace(model_repository=repository))
    assert [v.version for v in view.versions] == ["10", "2", "1"]
    broken, two, one = view.versions
    assert broken.problem == "metadata.json unreadable: JSONDecodeError"
    assert two.metrics == {"accuracy": 0.75} and two.serving is None and not two.has_cam
    assert one.metrics == {} and view.serving is None
