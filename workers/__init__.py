"""Where models and store meet: the Celery app and broker (``app``), scoring, routing, submission,
encoder weights, training jobs and webhooks."""
