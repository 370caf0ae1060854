"""GET /playground: a one-page web UI over the user API, for trying the server in a browser.

The page is static and holds no secret: the user pastes their own API key, and the page calls
the same routes any client does (same origin, same rules). It needs nothing from outside the
server (no CDN), so it works offline. /favicon.ico is served too: browsers ask for it on every
site, and a 404 would show as an error in their console.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse

from qwen3_tts_server.api.responses import DocumentedRoute

router = APIRouter(tags=["playground"], route_class=DocumentedRoute)

_STATIC = files("qwen3_tts_server").joinpath("static")
_PAGE = _STATIC.joinpath("playground.html").read_text(encoding="utf-8")
_ICON = _STATIC.joinpath("favicon.ico").read_bytes()


@router.get("/playground", response_class=HTMLResponse, summary="Web playground")
def playground() -> HTMLResponse:
    """Connect with your API key, make a voice (describe or clone), hear it (streamed or whole),
    see your usage."""
    return HTMLResponse(_PAGE)


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    return Response(
        _ICON, media_type="image/x-icon", headers={"Cache-Control": "public, max-age=86400"}
    )
