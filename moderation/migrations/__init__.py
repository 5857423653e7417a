"""Alembic migrations of the one schema (:mod:`moderation.models`), applied by ``dfmod migrate``."""
