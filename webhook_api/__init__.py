"""Flask application factory of the webhook API (submissions, operations; the dashboard plugs in).

Configuration is layered: Flask defaults, then values derived from :class:`Settings` (which come
from embedded defaults and ``DFMOD_*`` variables), then ``test_config``. No app or engine exists
at import time.
"""

from __future__ import annotations

import importlib
import io
import logging
from typing import IO, Any

from flask import Flask, Request
from werkzeug.formparser import FormDataParser

from moderation.settings import Settings, load_settings
from webhook_api.multipart import IN_MEMORY_BODY_BYTES, InMemoryFormDataParser

logger = logging.getLogger(__name__)

# Room for multipart boundaries and form fields on top of the largest accepted file.
REQUEST_OVERHEAD_BYTES = 256 * 1024


class UploadRequest(Request):
    """Werkzeug spools every file part of a body over 500 KB to a temporary file on disk, which
    the submission then reads straight back; typical photos (a few MB) stay in memory here, split
    in one pass by :class:`~webhook_api.multipart.InMemoryFormDataParser`. Bodies are bounded by
    ``MAX_CONTENT_LENGTH``, so memory per request stays bounded too."""

    form_data_parser_class = InMemoryFormDataParser

    def make_form_data_parser(self) -> FormDataParser:
        parser = super().make_form_data_parser()
        if isinstance(parser, InMemoryFormDataParser):
            parser.environ = self.environ
        return parser

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        if total_content_length is not None and total_content_length <= IN_MEMORY_BODY_BYTES:
            return io.BytesIO()
        return super()._get_file_stream(
            total_content_length, content_type, filename, content_length
        )


BLUEPRINTS = ("webhook_api.submissions:bp", "webhook_api.ops:bp")
# Blueprints owned by other parts of the project, registered when their module exists.
OPTIONAL_BLUEPRINTS = ("webhook_api.review:bp",)


def _blueprint(path: str, *, optional: bool = False) -> Any:
    module_name, attr = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if optional and exc.name == module_name:
            return None
        raise
    return getattr(module, attr)


def create_app(
    settings: Settings | None = None, test_config: dict[str, Any] | None = None
) -> Flask:
    """Returns the configured Flask application."""
    from webhook_api.metrics import ApiMetrics
    from webhook_api.problems import register_error_handlers
    from webhook_api.state import AppState

    settings = settings or load_settings()
    app = Flask(__name__)
    app.request_class = UploadRequest
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + REQUEST_OVERHEAD_BYTES,
        JSON_SORT_KEYS=False,
        DFMOD_SETTINGS=settings,
    )
    if test_config:
        app.config.from_mapping(test_config)
    AppState.from_settings(app.config["DFMOD_SETTINGS"]).init_app(app)
    app.extensions["dfmod_metrics"] = ApiMetrics(app)
    register_error_handlers(app)
    for path in BLUEPRINTS:
        app.register_blueprint(_blueprint(path))
    for path in OPTIONAL_BLUEPRINTS:
        if (blueprint := _blueprint(path, optional=True)) is not None:
            app.register_blueprint(blueprint)
    logger.info(
        "webhook API configured (database %s)", settings.resolved_database_url.split("@")[-1]
    )
    return app
