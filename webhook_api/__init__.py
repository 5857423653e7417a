"""Flask application factory and blueprints of the webhook API, dashboard and operations."""
