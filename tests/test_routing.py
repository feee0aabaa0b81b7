import hashlib

import pytest

from workers.routing import AUDIT, DISAGREEMENT, NEAR_THRESHOLD, RoutingPolicy, audit_pick, route

NO_AUDIT = RoutingPolicy(audit_fraction=0.0)
SHA = hashlib.sha256(b"x").hexdigest()


@pytest.mark.parametrize("p, routed", [(0.54, True), (0.6, True), (0.4, True), (0.5, True),
                                       (0.3999, False), (0.6001, False), (0.99, False), (0.01, False)])
def test_band_is_inclusive_and_catches_the_seeds_hard_cases(p, routed):
    zs = 0.9 if p >= 0.5 else 0.1  # zero-shot agrees, so only the band can route
    d = route(p, zs, SHA, NO_AUDIT)
    assert d.routed is routed
    assert d.reasons == ((NEAR_THRESHOLD,) if routed else ())


def test_disagreement_between_the_judges():
    d = route(0.9, 0.2, SHA, NO_AUDIT)
    assert d.reasons == (DISAGREEMENT,)
    assert route(0.55, 0.45, SHA, NO_AUDIT).reasons == (NEAR_THRESHOLD, DISAGREEMENT)
    assert route(0.9, 0.8, SHA, NO_AUDIT).routed is False


def test_without_a_head_the_band_applies_to_zero_shot_and_nobody_disagrees():
    assert route(None, 0.52, SHA, NO_AUDIT).reasons == (NEAR_THRESHOLD,)
    assert route(None, 0.95, SHA, NO_AUDIT).routed is False


def test_priority_puts_the_most_uncertain_first():
    ps = [route(p, 0.5, SHA, NO_AUDIT).priority for p in (0.5, 0.55, 0.6, 0.9)]
    assert ps == sorted(ps, reverse=True) and ps[0] == 1.0


def test_audit_is_deterministic_and_close_to_its_fraction():
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20000)]
    picked = [s for s in shas if audit_pick(s, 0.05)]
    assert 0.04 < len(picked) / len(shas) < 0.06
    assert picked == [s for s in shas if audit_pick(s, 0.05)]
    assert not any(audit_pick(s, 0.0) for s in shas[:100])
    policy = RoutingPolicy(audit_fraction=0.05)
    d = route(0.95, 0.95, picked[0], policy)
    assert d.reasons == (AUDIT,)
    # an image already routed for another reason is not additionally marked audit
    assert route(0.5, 0.5, picked[0], policy).reasons == (NEAR_THRESHOLD,)


def test_three_class_routing():
    from workers.routing import route_three_class

    pol = RoutingPolicy(audit_fraction=0.0, min_confidence=0.6)
    zs_road = {"field": 0.2, "road": 0.7, "road_and_field": 0.1}
    # a confident road-and-field is accepted, whatever zero-shot thinks of field vs road
    assert not route_three_class({"field": 0.05, "road": 0.1, "road_and_field": 0.85}, zs_road, SHA, pol).routed
    # low confidence
    d = route_three_class({"field": 0.3, "road": 0.45, "road_and_field": 0.25}, zs_road, SHA, pol)
    assert d.reasons == (NEAR_THRESHOLD,) and d.priority == pytest.approx(0.85)
    # field vs road disagreement with zero-shot
    assert route_three_class({"field": 0.9, "road": 0.05, "road_and_field": 0.05}, zs_road, SHA,
                             pol).reasons == (DISAGREEMENT,)
    assert not route_three_class({"field": 0.05, "road": 0.9, "road_and_field": 0.05}, zs_road, SHA, pol).routed
