"""GET /playground: a one-page web UI over the user API, for trying the server in a browser.

The page is static and holds no secret: the user pastes their own API key, and the page calls
the same routes any client does (same origin, same rules).
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["playground"])

_PAGE = files("qwen3_tts_server").joinpath("static/playground.html").read_text(encoding="utf-8")


@router.get("/playground", response_class=HTMLResponse, summary="Web playground")
def playground() -> HTMLResponse:
    """List your voices and usage, clone a voice and hear /tts, with your API key."""
    return HTMLResponse(_PAGE)
