"""A retrain that promotes its candidate and finds suspect training labels announces both."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from sqlalchemy import select

from store.db import session_scope
from store.schema import WebhookDelivery
from tests.test_learning import loop  # noqa: F401 - the fixture
from tests.webui.test_webhooks import SECRET, Receiver, check_signed


@pytest.mark.slow
def test_retrain_announces_the_promotion_and_the_suspect_labels(settings, loop):  # noqa: F811
    from workers.retrain import retrain
    from workers.webhooks import deliver

    receiver = Receiver()
    try:
        hooked = replace(settings, webhook_urls=(receiver.url,), webhook_secret=SECRET)
        out = retrain(hooked)
        assert out.promoted and out.suspects >= 3
        with session_scope(loop["url"]) as s:
            rows = [(r.id, r.event, json.loads(r.body)) for r in
                    s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))]
        assert [e for _, e, _ in rows] == ["model.promoted", "label.suspect"]
        promoted, suspect = rows[0][2]["data"], rows[1][2]["data"]
        assert promoted["version"] == out.version_id and promoted["previous_version"] == loop["binary"]
        assert promoted["trigger"] == "manual" and promoted["held_out"]["macro_f1"] == out.candidate["macro_f1"]
        assert suspect["routed"] == out.suspects
        assert set(loop["flipped"]) <= {i["image_id"] for i in suspect["images"]}
        for pk, _, _ in rows:
            assert deliver.apply(args=[pk]).get() == "delivered"
        assert [check_signed(r, e)["event"] for r, e in
                zip(receiver.got, ["model.promoted", "label.suspect"])] == ["model.promoted", "label.suspect"]
    finally:
        receiver.close()
