"""A one-page web UI at `GET /` for trying the service by hand (profile, user, new item).

The page is one package file (HTML, inline CSS and vanilla JS: no build step, no CDN) that talks
only to this API, on the same origin, with the key the visitor types in. It needs no key itself
and holds no data, so it is public. Its Content-Security-Policy allows exactly its own inline
script and style (by hash) and requests to this origin, so even a bug in how it shows data could
not load or send anything elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

PAGE = "index.html"
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def page_html() -> str:
    """The page, read from the installed package (so it ships in the wheel)."""
    return (resources.files("warmstart.serve") / "static" / PAGE).read_text(encoding="utf-8")


def content_security_policy(html: str) -> str:
    """A CSP that allows the page's own inline blocks by their sha256 and nothing from elsewhere."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for tag, body in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes[tag].append(f"'sha256-{digest}'")
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(hashes["script"] or ["'none'"]),
            "style-src " + " ".join(hashes["style"] or ["'none'"]),
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def install_web(app: FastAPI) -> None:
    """Add `GET /`: the page, with no key needed and no place in the OpenAPI document."""
    html = page_html()
    headers = {
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(html, headers=headers)
