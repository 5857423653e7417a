"""The Celery app, its thin tasks, scoring, leases, the sweeper and callback delivery."""
