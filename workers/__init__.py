"""Where models and store meet: the Celery app, scoring, routing, submission and training jobs."""
