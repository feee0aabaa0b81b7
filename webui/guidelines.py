"""Labeling guidelines that admins write in Markdown and reviewers open with ``?``.

The text is kept in the database (store/guidelines.py), so every web server shows the same. It is
rendered by markdown-it-py with raw HTML switched off (so ``<script>`` is shown as text) and the
result is cleaned once more by nh3 (an allow-list HTML sanitiser): no scripts, no event handlers,
no ``javascript:`` links, whatever an admin pastes in.
"""
from __future__ import annotations

import nh3
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from markdown_it import MarkdownIt
from markupsafe import Markup
from werkzeug.exceptions import BadRequest

from store import guidelines as store_guidelines

from .auth import admin_required
from .context import db

bp = Blueprint("guidelines", __name__)
MAX_CHARS = 50_000
_md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
TAGS = {"p", "br", "hr", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "strong", "em", "code",
        "pre", "blockquote", "a", "img", "table", "thead", "tbody", "tr", "th", "td"}
ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "th": {"align"},
              "td": {"align"}, "ol": {"start"}}


def text() -> str:
    with db() as s:
        return store_guidelines.text(s)


def render(source: str) -> Markup:
    """Markdown to HTML that is safe to put on the page. Headings start at h2: the page has
    its own h1."""
    html = _md.render(source)
    for level in range(5, 0, -1):  # h1 -> h2 ... h5 -> h6
        html = html.replace(f"<h{level}>", f"<h{level + 1}>").replace(f"</h{level}>", f"</h{level + 1}>")
    return Markup(nh3.clean(html, tags=TAGS, attributes=ATTRIBUTES,
                            url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer"))


def rendered() -> Markup | None:
    source = text()
    return render(source) if source.strip() else None


def save(source: str) -> None:
    with db() as s:
        store_guidelines.save(s, source, current_user.id)


@bp.get("/review/guidelines")
def page():
    return render_template("guidelines.html", html=rendered(), source=text(), max_chars=MAX_CHARS)


@bp.post("/admin/guidelines")
@admin_required
def edit():
    source = request.form.get("guidelines")
    if source is None:
        raise BadRequest("nothing saved: the form has no 'guidelines' field")
    source = source.replace("\r\n", "\n")
    if len(source) > MAX_CHARS:
        raise BadRequest(f"nothing saved: the guidelines are {len(source):,} characters; "
                         f"at most {MAX_CHARS:,}")
    save(source)
    flash("Guidelines saved; reviewers see them on their next image (press ?).", "info")
    return redirect(url_for("guidelines.page"))
