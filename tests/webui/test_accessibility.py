"""WCAG 2.1 AA: axe-core (vendored, tests/webui/fixtures/axe-core) runs on every page in
Chromium, as a reviewer and as an admin, and any serious or critical violation fails the test.
Each page is also photographed at 1440×900 and 390×844 into test-artifacts/ (people look at
them), and the counts per impact go to test-artifacts/axe-<role>.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .livebrowser import (
    ARTIFACTS, DESKTOP, PHONE, chromium, live_app, seed_showcase, sign_in, watch_errors,  # noqa: F401
)

AXE = Path(__file__).parent / "fixtures" / "axe-core" / "axe.min.js"
BLOCKING = {"serious", "critical"}


def pages(ids: dict, admin: bool) -> list[tuple[str, str]]:
    """(name, path) of every page a signed-in user of that role can open."""
    out = [("review", "/review"), ("guidelines", "/review/guidelines"), ("queue", "/queue"),
           ("browse", "/browse"), ("item", f"/browse/{ids['done_image']}"),
           ("item-failed", f"/browse/{ids['failed_image']}"), ("batches", "/batches"),
           ("batch", "/batches/1"), ("batch-failed", "/batches/2"), ("dashboard", "/dashboard"),
           ("not-found", "/browse/999999")]
    if admin:
        out += [("users", "/admin/users"), ("models", "/admin/models"),
                ("model", f"/admin/models/{ids['model']}"),
                ("model-old", f"/admin/models/{ids['old_model']}")]
    return out


def run_axe(page) -> list[dict]:
    page.add_script_tag(content=AXE.read_text())
    return page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                       nodes: v.nodes.map(n => n.target.join(' '))}));
    }""")


def settle(page, name: str) -> None:
    if name == "review":  # the first image is claimed and drawn by script
        page.wait_for_function("() => document.getElementById('photo').complete"
                               " && !document.getElementById('photo').hidden")


@pytest.mark.slow
@pytest.mark.parametrize("role", ["reviewer", "admin"])
def test_no_serious_or_critical_violation_on_any_page(live_app, chromium, seed, role):
    base, _ = live_app
    ids = seed_showcase(seed)
    name = "ada" if role == "admin" else "rob"
    from store import guidelines as store_guidelines
    from store.db import session_scope

    with session_scope(seed.url) as s:
        store_guidelines.save(
            s, "# When is it a road?\n\nA **paved or gravel** track wide enough for a car.\n\n"
               "* field: crops, grass, no track\n* road and field: both, neither dominating\n\n"
               "See [the survey manual](https://example.org/manual).\n", None)
    if role == "admin":  # somebody holds images: the queue page offers to release them
        from store import review as store_review
        from store.db import session_scope

        with session_scope(seed.url) as s:
            first = store_review.claim_next(s, seed.users["rob"], "rob", 600)
            store_review.claim_next(s, seed.users["rob"], "rob", 600, [first])
    ARTIFACTS.mkdir(exist_ok=True)
    report, blocking = {}, []
    # axe arrives as an inline script, which the pages' Content-Security-Policy (rightly) forbids
    ctx = chromium.new_context(viewport=DESKTOP, bypass_csp=True)
    page = ctx.new_page()
    errors = watch_errors(page)
    page.goto(f"{base}/login")
    login_violations = run_axe(page)
    report["login"] = login_violations
    page.screenshot(path=str(ARTIFACTS / "desktop-login.png"))
    sign_in(page, base, name)
    phone = chromium.new_context(viewport=PHONE, bypass_csp=True, is_mobile=True, has_touch=True)
    phone_page = phone.new_page()
    sign_in(phone_page, base, name)
    for title, path in pages(ids, role == "admin"):
        page.goto(base + path)
        settle(page, title)
        report[title] = run_axe(page)
        if title == "review":  # and with the guidelines open over the image
            page.keyboard.press("?")
            page.wait_for_selector("#guidelines[open]")
            report["review+guidelines"] = run_axe(page)
            page.screenshot(path=str(ARTIFACTS / f"desktop-{role}-review-guidelines.png"))
            page.keyboard.press("Escape")
        page.screenshot(path=str(ARTIFACTS / f"desktop-{role}-{title}.png"), full_page=True)
        phone_page.goto(base + path)
        settle(phone_page, title)
        wide = phone_page.evaluate("document.documentElement.scrollWidth")
        if wide > PHONE["width"]:  # a page wider than the phone scrolls sideways: a layout bug
            blocking.append(f"{title}@phone: the page is {wide} px wide")
        if title in ("review", "dashboard", "users", "model"):  # the phone layout's own rules
            report[f"{title}@phone"] = run_axe(phone_page)
        phone_page.screenshot(path=str(ARTIFACTS / f"phone-{role}-{title}.png"),
                              full_page=title != "review")
    phone.close()
    ctx.close()
    counts = {}
    for title, violations in report.items():
        for v in violations:
            counts[v["impact"]] = counts.get(v["impact"], 0) + len(v["nodes"])
            if v["impact"] in BLOCKING:
                blocking.append(f"{title}: {v['id']} ({v['impact']}) {v['help']} -> {v['nodes'][:5]}")
    (ARTIFACTS / f"axe-{role}.json").write_text(json.dumps(
        {"nodes_by_impact": counts, "pages": report}, indent=1))
    assert not blocking, "\n".join(blocking)
    assert not [e for e in errors if "404" not in e], errors
