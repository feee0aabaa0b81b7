"""Who needs a person: a pure function of the scores and the policy (no I/O, easy to test).

Binary phase, in order of precedence:
- the head's p(road) lies inside the band (inclusive)            -> ``near_threshold``
- the head's class differs from zero-shot's class                -> ``disagreement``
- none of those, but the image hash falls in the audit fraction  -> ``audit``
Without an active head the band applies to zero-shot's p(road) and there is nobody to disagree.
Priority is the primary judge's uncertainty, 1 - 2|p - 0.5| in [0, 1]: most uncertain first.
"""
from __future__ import annotations

from dataclasses import dataclass

NEAR_THRESHOLD = "near_threshold"
DISAGREEMENT = "disagreement"
AUDIT = "audit"
REASONS = (NEAR_THRESHOLD, DISAGREEMENT, AUDIT)


@dataclass(frozen=True)
class RoutingPolicy:
    band: tuple = (0.4, 0.6)
    audit_fraction: float = 0.05


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
