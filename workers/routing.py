"""Who needs a person: a pure function of the scores and the policy (no I/O, easy to test).

Binary phase, in order of precedence:
- the head's p(road) lies inside the band (inclusive)            -> ``near_threshold``
- the head's class differs from zero-shot's class                -> ``disagreement``
- none of those, but the image hash falls in the audit fraction  -> ``audit``
Without an active head the band applies to zero-shot's p(road) and there is nobody to disagree.
Priority is the primary judge's uncertainty, 1 - 2|p - 0.5| in [0, 1]: most uncertain first.

Three-class phase (``route_three_class``): the head's top probability below ``min_confidence``
-> ``near_threshold``; head and zero-shot both say field or road but not the same one ->
``disagreement`` (zero-shot is no judge of road-and-field); a confident road-and-field is
accepted. Priority is 1 - (top - second probability).
"""
from __future__ import annotations

from dataclasses import dataclass

NEAR_THRESHOLD = "near_threshold"
DISAGREEMENT = "disagreement"
AUDIT = "audit"
SUSPECT_LABEL = "suspect_label"   # set by retraining, not here: a training label the model rejects
REASONS = (NEAR_THRESHOLD, DISAGREEMENT, AUDIT, SUSPECT_LABEL)
# Tasks with these reasons wait for a person whatever a better model says; the others
# (near_threshold, disagreement) are re-scored after a promotion and may be resolved.
HUMAN_REASONS = (AUDIT, SUSPECT_LABEL)


@dataclass(frozen=True)
class RoutingPolicy:
    band: tuple = (0.4, 0.6)
    audit_fraction: float = 0.05
    min_confidence: float = 0.6


@dataclass(frozen=True)
class Decision:
    routed: bool
    reasons: tuple
    priority: float

    @property
    def reasons_text(self) -> str:
        return ",".join(self.reasons)


def binary_class(p_road: float) -> str:
    return "road" if p_road >= 0.5 else "field"


def audit_pick(sha256: str, fraction: float) -> bool:
    """Deterministic: the same image is always in or out of the audit sample."""
    if fraction <= 0:
        return False
    return int(sha256[:15], 16) / float(16 ** 15) < fraction


def route(head_p_road: float | None, zs_p_road: float, sha256: str, policy: RoutingPolicy) -> Decision:
    primary = zs_p_road if head_p_road is None else head_p_road
    low, high = policy.band
    reasons = []
    if low <= primary <= high:
        reasons.append(NEAR_THRESHOLD)
    if head_p_road is not None and binary_class(head_p_road) != binary_class(zs_p_road):
        reasons.append(DISAGREEMENT)
    if not reasons and audit_pick(sha256, policy.audit_fraction):
        reasons.append(AUDIT)
    return Decision(bool(reasons), tuple(reasons), round(1.0 - 2.0 * abs(primary - 0.5), 6))


def route_three_class(head_probs: dict, zs_probs: dict, sha256: str, policy: RoutingPolicy) -> Decision:
    ranked = sorted(head_probs.items(), key=lambda kv: kv[1], reverse=True)
    (top_cls, top_p), second_p = ranked[0], ranked[1][1]
    zs_cls = max(zs_probs, key=zs_probs.get)
    reasons = []
    if top_p < policy.min_confidence:
        reasons.append(NEAR_THRESHOLD)
    if top_cls in ("field", "road") and zs_cls in ("field", "road") and top_cls != zs_cls:
        reasons.append(DISAGREEMENT)
    if not reasons and audit_pick(sha256, policy.audit_fraction):
        reasons.append(AUDIT)
    return Decision(bool(reasons), tuple(reasons), round(1.0 - (top_p - second_p), 6))
