"""The Celery app, its thin tasks, the Triton client and callback delivery."""
