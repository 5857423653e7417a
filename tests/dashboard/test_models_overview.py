"""The overview shows the served models, the ensemble's weights and each tenant's models."""

from __future__ import annotations

import json

from flask.testing import FlaskClient

from moderation.db import make_engine, make_session_factory, session_scope
from moderation.settings import PROJECT_ROOT, Settings
from moderation.tenant_models import set_models, set_thresholds
from tests.fixtures.database import create_test_tenant
from tests.fixtures.flask_app import login


def test_overview_shows_models_weights_and_tenant_choices(
    client: FlaskClient, settings: Settings
) -> None:
    create_test_tenant(settings.resolved_database_url, "acme")
    create_test_tenant(settings.resolved_database_url, "globex")
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            set_models(
                session=session,
                name="acme",
                models=["deepfake_detector"],
                repository=settings.model_repository,
            )
            set_thresholds(session=session, name="acme", pass_below=0.1, flag_at=0.95)
    finally:
        engine.dispose()
    login(client)
    page = client.get("/review/overview").get_data(as_text=True)
    ensembles = PROJECT_ROOT / "model_repository" / "_ensemble"
    latest = max(int(p.name) for p in ensembles.iterdir())
    artefact = json.loads((ensembles / str(latest) / "ensemble.json").read_text())
    weights = artefact["combinations"]["deepfake_detector+residual_detector"]["weights"]
    assert f"Ensemble version {latest}" in page
    for name, weight in weights.items():
        assert f'data-model="{name}"' in page and f"{weight:.3f}" in page
    assert "yes: never decides alone" in page
    assert '<tr data-tenant="acme"><td>acme</td><td>deepfake_detector</td>' in page
    assert "<td>0.1</td><td>0.95</td>" in page
    assert "<td>deepfake_detector, residual_detector (default)</td>" in page
