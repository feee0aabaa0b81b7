"""Errors people cause when submitting or training, importable without Celery or torch."""


class BrokerUnavailable(RuntimeError):
    """The broker (VERGE_BROKER_URL) cannot be reached."""


class TrainingDataError(ValueError):
    """A training folder is missing, empty or laid out wrongly."""
