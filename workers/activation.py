"""Switching the active head by hand (``verge models activate|rollback``, the admin page): the
switch in one transaction (store/model_versions.py), then the webhook. Torch-free, so that the
web UI can call it without loading a network."""
from __future__ import annotations

from store import model_versions
from store.db import session_scope
from store.model_versions import RolledBack
from store.schema import ModelVersion
from verge.settings import Settings

from . import webhooks


def activate(settings: Settings, version_id: int) -> ModelVersion:
    """Make ``version_id`` the active head; ValueError when there is no such version."""
    with session_scope(settings.resolved_database_url) as s:
        mv, previous = model_versions.activate(s, version_id)
        info = {"version": mv.id, "kind": mv.kind, "trigger": "manual", "previous_version": previous}
    webhooks.emit(settings, "model.promoted", info)
    return mv


def rollback(settings: Settings) -> RolledBack:
    """Re-activate the head that was active before the current one (store/model_versions.py
    ``roll_back``); ValueError when there is nothing to roll back. Returns (from_version,
    to_version, tasks_reopened)."""
    with session_scope(settings.resolved_database_url) as s:
        out = model_versions.roll_back(s)
    webhooks.emit(settings, "model.rolled_back", {"from_version": out.from_version,
                                                  "to_version": out.to_version,
                                                  "review_tasks_reopened": out.reopened})
    return out
