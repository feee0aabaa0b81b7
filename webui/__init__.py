"""The review web UI: a Flask app factory (``webui.app``) and one blueprint per page.

    gunicorn 'webui:create_app()'

Flask and the blueprints load on the first ``create_app`` call, not on ``import webui``: every
``verge`` command imports ``webui.cli`` to register ``verge web`` and ``verge users``, and
``verge submit`` or a GPU worker has no use for the web stack.
"""
from __future__ import annotations


def create_app(settings=None, **overrides):
    from .app import create_app as factory

    return factory(settings, **overrides)
