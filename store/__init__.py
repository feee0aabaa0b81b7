"""Persistence: schema, engines and sessions, blob storage, and the queries verge runs.
Knows nothing of torch or Celery."""
