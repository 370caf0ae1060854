"""The playground in a real browser: Debian's chromium, driven by Playwright, against the real
server on a real port with the tiny models, as a new user would use it.

Playwright never downloads a browser here: it is pointed at the system's chromium (Debian
package `chromium`; `make test` installs it where it can). Where chromium is missing the tests
skip, except in CI (CI=true), where a missing browser is a failure: the suite must not pass
there without having looked at the page.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect, sync_playwright
from streamkit import ScriptedEngine
from support import admin_headers, clone_voice, make_settings, new_user_key, reference_audio

from conftest import LiveServer
from qwen3_tts_server.app import create_app
from qwen3_tts_server.engine.base import Engine

#: Long enough for a model call on a busy two-core CI machine.
TIMEOUT_MS = 60_000


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        message = "chromium is not installed (Debian package `chromium`; `make test` installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = _chromium()
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        # Headless pages have no user to click "allow sound": let Web Audio start by itself.
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--autoplay-policy=no-user-gesture-required"]
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path_factory.mktemp("browser") / "data")
    with LiveServer(create_app(settings, lambda: engine), settings) as live:
        live.wait_ready()
        yield live


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture
def page(browser: Browser, server: LiveServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server.url}/playground")
    yield page
    context.close()


def _key(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def _connect(page: Page, headers: dict[str, str]) -> None:
    page.fill("#key", _key(headers))
    page.click("#connect")
    expect(page.locator("#connect-status")).to_have_class("status ok")


def _tts_posts(page: Page) -> list[dict[str, object]]:
    """Bodies of the /tts calls the page makes from now on."""
    bodies: list[dict[str, object]] = []

    def seen(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/tts"):
            bodies.append(json.loads(request.post_data or "{}"))

    page.on("request", seen)
    return bodies


def _assert_beside(page: Page, button: str, status: str) -> None:
    """The status shows next to the button that caused it, on screen: not below the fold."""
    button_box = page.locator(button).bounding_box()
    status_box = page.locator(status).bounding_box()
    assert button_box is not None and status_box is not None
    assert abs(status_box["y"] - button_box["y"]) < 60, (button_box, status_box)
    assert page.locator(status).is_visible()


def _player_seconds(page: Page) -> float:
    """Duration of what the page's audio player holds (waits for its metadata)."""
    page.wait_for_function(
        "() => Number.isFinite(document.getElementById('player').duration)"
        " && document.getElementById('player').duration > 0"
    )
    seconds: float = page.evaluate("document.getElementById('player').duration")
    return seconds


def test_page_loads_offline_with_no_console_error(browser: Browser, server: LiveServer) -> None:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    urls: list[str] = []
    page.on("console", lambda message: _keep_errors(message, errors))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: urls.append(request.url))
    page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}"))
    page.on(
        "response",
        lambda response: (
            errors.append(f"{response.status} {response.url}") if response.status >= 400 else None
        ),
    )

    page.goto(f"{server.url}/playground", wait_until="networkidle")

    assert errors == []
    # Resource timing also lists what the HTML preloader fetched (Playwright may not see it).
    urls += page.evaluate("performance.getEntriesByType('resource').map((entry) => entry.name)")
    assert f"{server.url}/favicon.ico" in urls
    assert page.evaluate("document.querySelector('.brand img').naturalWidth") > 0
    assert all(url.startswith(server.url) for url in urls), urls  # no CDN: works offline
    expect(page.locator("#connect-status")).to_have_text("Paste your key, then Connect.")
    expect(page.locator("#usage")).to_be_hidden()
    context.close()


def _keep_errors(message: ConsoleMessage, errors: list[str]) -> None:
    if message.type == "error":
        errors.append(message.text)


def test_a_wrong_key_is_a_sentence_beside_connect(page: Page) -> None:
    page.fill("#key", "not-a-real-key")
    page.press("#key", "Enter")  # submits like Connect, without reloading the page

    status = page.locator("#connect-status")
    expect(status).to_have_class("status error")
    expect(status).to_have_text(
        "The API key was not accepted (Invalid or revoked API key). Check that you pasted all "
        "of it, or ask your administrator for a new invite."
    )
    _assert_beside(page, "#connect", "#connect-status")
    expect(page.locator("#usage")).to_be_hidden()


def test_clone_from_a_file_then_speak(page: Page, http: httpx.Client, tmp_path: Path) -> None:
    _, headers = new_user_key(http)
    recording = tmp_path / "me.wav"
    recording.write_bytes(reference_audio("wav"))
    _connect(page, headers)
    expect(page.locator("#connect-status")).to_have_text(
        "Connected. Next, make a voice in step 2 (and 9 preset speakers)."
    )

    # FastAPI's 422 list, turned into a sentence about the form's own field.
    page.fill("#clone-name", "Browser voice")
    page.fill("#clone-transcript", "Hello there, this is my voice.")
    page.click("#clone")
    expect(page.locator("#clone-status")).to_have_text("Recording is required.")
    expect(page.locator("#clone-status")).to_have_class("status error")
    _assert_beside(page, "#clone", "#clone-status")

    page.set_input_files("#clone-file", str(recording))
    page.click("#clone")
    expect(page.locator("#clone-status")).to_have_class("status ok")
    voices = http.get("/voices", headers=headers).json()
    assert [voice["name"] for voice in voices] == ["Browser voice"]
    voice_id = voices[0]["voice_id"]
    expect(page.locator("#clone-status")).to_have_text(
        f"Cloned voice #{voice_id} for {len('Hello there, this is my voice.')} tokens. "
        "It is selected in step 3."
    )
    expect(page.locator("#tts-voice")).to_have_value(f"voice:{voice_id}")
    expect(page.locator("#usage-voices")).to_have_text("1")

    posts = _tts_posts(page)
    page.uncheck("#tts-stream")
    page.select_option("#tts-format", "mp3")
    page.fill("#tts-text", "Hello from the browser.")
    page.click("#speak")

    status = page.locator("#speak-status")
    expect(status).to_have_class("status ok")
    expect(status).to_contain_text("tokens, ")
    assert posts == [
        {
            "text": "Hello from the browser.",
            "language": "auto",
            "voice_id": voice_id,
            "format": "mp3",
        }
    ]
    assert _player_seconds(page) > 0
    expect(page.locator("#download")).to_have_attribute("download", "speech.mp3")
    # Usage in the header is refreshed after the call, and so are the voice's uses.
    expect(page.locator("#usage-calls")).to_have_text("1")
    usage = http.get("/usage", headers=headers).json()
    expect(page.locator("#usage-tokens")).to_have_text(f"{usage['tokens_used_total']:,}")
    expect(page.locator("#voices tr td").nth(3)).to_have_text("1")
    # A cloned voice takes no instructions: the field is not offered for it.
    expect(page.locator("#instruct-row")).to_be_hidden()


def test_speak_with_a_preset_speaker_and_instructions(page: Page, http: httpx.Client) -> None:
    _, headers = new_user_key(http)
    _connect(page, headers)
    expect(page.locator("#connect-status")).to_have_text(
        "Connected. Next, make a voice in step 2 (and 9 preset speakers)."
    )
    presets = page.locator("#tts-voice optgroup[label='Preset speakers'] option")
    expect(presets).to_have_count(9)
    expect(presets.first).to_contain_text(" – ")  # the name and the model card's description
    posts = _tts_posts(page)
    page.select_option("#tts-voice", "speaker:Vivian")
    expect(page.locator("#instruct-row")).to_be_visible()
    page.fill("#tts-instruct", "Cheerful, a little faster")
    page.uncheck("#tts-stream")
    page.fill("#tts-text", "Hello from a preset speaker.")
    page.click("#speak")

    expect(page.locator("#speak-status")).to_have_class("status ok")
    assert posts == [
        {
            "text": "Hello from a preset speaker.",
            "language": "auto",
            "speaker": "Vivian",
            "instruct": "Cheerful, a little faster",
            "format": "wav",
        }
    ]
    assert _player_seconds(page) > 0
    expect(page.locator("#usage-calls")).to_have_text("1")
    usage = http.get("/usage", headers=headers).json()
    assert usage["tts_calls"] == 1 and usage["tokens_used_tts"] == len(
        "Hello from a preset speaker."
    )


def test_stream_plays_while_it_arrives(page: Page, http: httpx.Client) -> None:
    _, headers = new_user_key(http)
    voice_id = clone_voice(http, headers, name="Streamer")
    _connect(page, headers)
    posts = _tts_posts(page)
    text = "First sentence of the stream. And then a second one follows it."
    page.fill("#tts-text", text)

    page.click("#speak")

    status = page.locator("#speak-status")
    expect(status).to_have_class("status ok")
    expect(status).to_contain_text("first sound after")
    assert posts == [
        {"text": text, "language": "auto", "voice_id": voice_id, "format": "pcm", "stream": True}
    ]
    streamed = float(status.inner_text().split("Streamed ")[1].split(" s")[0])
    assert streamed > 0
    # What was played is offered again, whole, as a WAV of the same length.
    assert _player_seconds(page) == pytest.approx(streamed, abs=0.1)
    expect(page.locator("#download")).to_have_attribute("download", "speech.wav")
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator("#usage-calls")).to_have_text("1")
    generation = http.get("/usage", headers=headers).json()
    assert generation["tts_calls"] == 1 and generation["tokens_used_tts"] == len(text)


def test_a_double_click_is_one_call_and_one_charge(page: Page, http: httpx.Client) -> None:
    _, headers = new_user_key(http)
    clone_voice(http, headers)
    _connect(page, headers)
    posts = _tts_posts(page)
    page.uncheck("#tts-stream")
    page.fill("#tts-text", "Only once, please.")

    page.dblclick("#speak")

    expect(page.locator("#speak-status")).to_have_class("status ok")
    expect(page.locator("#speak")).to_be_enabled()
    expect(page.locator("#usage-calls")).to_have_text("1")
    assert len(posts) == 1
    assert http.get("/usage", headers=headers).json()["tts_calls"] == 1


def test_an_invite_code_in_the_key_field_becomes_a_key_shown_once(
    browser: Browser, server: LiveServer, http: httpx.Client
) -> None:
    user_id = http.post("/admin/users", headers=admin_headers()).json()["user_id"]
    code = http.post(f"/admin/users/{user_id}/invites", headers=admin_headers()).json()
    context = browser.new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server.url}/playground")

    page.fill("#key", code["invite_code"])
    page.click("#connect")

    status = page.locator("#connect-status")
    expect(status).to_have_class("status ok")
    expect(status).to_contain_text("Your invite was exchanged for the key shown below.")
    expect(page.locator("#new-key")).to_be_visible()
    key = page.locator("#new-key-value").inner_text()
    assert page.input_value("#key") == key  # the page now uses the new key
    assert http.get("/usage", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    expect(page.locator("#usage")).to_be_visible()
    page.click("#copy-key")
    expect(page.locator("#copy-key")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == key
    # The invite was used up: the same code again is refused, and the key stays hidden.
    page.fill("#key", code["invite_code"])
    page.click("#connect")
    expect(status).to_have_class("status error")
    expect(page.locator("#new-key")).to_be_hidden()
    context.close()


def test_stop_shows_what_the_server_charged_and_the_settled_usage(
    browser: Browser, tmp_path: Path, engine: Engine
) -> None:
    """The model is held after the first sentence, so Stop lands mid-stream every time."""
    held = ScriptedEngine(engine)
    settings = make_settings(tmp_path / "data", chunk_max_chars=40, engine_max_batch=1)
    with LiveServer(create_app(settings, lambda: held), settings) as live:
        live.wait_ready()
        with httpx.Client(base_url=live.url, timeout=60) as http:
            _, headers = new_user_key(http)
            clone_voice(http, headers, name="Streamer")
            held.hold = held.calls + 2  # the stream's second sentence
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{live.url}/playground")
            _connect(page, headers)
            page.fill("#tts-text", "The first sentence is heard. The second is never finished.")
            page.click("#speak")
            expect(page.locator("#speak-status")).to_contain_text("s received")
            assert held.holding.wait(60)
            page.click("#stop")
            held.proceed.set()

            status = page.locator("#speak-status")
            expect(status).to_contain_text("(cancelled): the server charged ")
            said = status.inner_text()
            generation_id = said.split("Generation #")[1].split(" ")[0]
            row = http.get(f"/generations/{generation_id}", headers=headers).json()
            assert row["status"] == "cancelled" and row["tokens_used"] > 0
            assert f"charged {row['tokens_used']} tokens" in said
            assert f"the {row['audio_seconds']:.1f} s of audio it sent" in said
            usage = http.get("/usage", headers=headers).json()
            # Read after the server settled the stream: the header shows its charge.
            expect(page.locator("#usage-tokens")).to_have_text(f"{usage['tokens_used_total']:,}")
            expect(page.locator("#usage-calls")).to_have_text("1")
            context.close()
