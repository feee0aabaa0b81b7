"""Persistence, one concept a module (README: the folder table): schema, engines and sessions,
blob storage, images, predictions, embeddings, review tasks, labels, model versions.
Knows nothing of torch or Celery."""
