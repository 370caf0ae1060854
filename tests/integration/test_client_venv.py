"""The Python client as its users get it: `pip install ./clients/python` into a fresh virtualenv
(no torch comes with it), then its README's examples and its command line against the offline
demo server (`qwen3-tts-server demo`, what `make demo` runs; seeds in order, see below) on a
real port.

The virtualenv needs `python -m venv` and a package index for httpx and websockets: where
either is missing the tests skip, and under REQUIRE_ALL_TESTS=1 (CI) they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support import clone_voice, reference_audio, unavailable, wait_for_http

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "clients" / "python"
README = CLIENT / "README.md"
#: pip's words for "the index cannot be reached or has no such package": a missing tool, not a bug.
_NO_INDEX = re.compile(
    r"Could not find a version|No matching distribution|NewConnectionError|"
    r"Network is unreachable|Temporary failure in name resolution|ConnectTimeout"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with nothing but the client and what pip resolves for it."""
    root = tmp_path_factory.mktemp("client-venv")
    made = subprocess.run(
        [sys.executable, "-m", "venv", str(root / "venv")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if made.returncode != 0:
        unavailable(f"`python -m venv` failed (Debian: python3-venv): {made.stderr[-500:]}")
    # From a copy: setuptools leaves build/ and *.egg-info in the folder it builds.
    source = root / "source"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    python = root / "venv" / "bin" / "python"
    installed = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if installed.returncode != 0:
        if _NO_INDEX.search(installed.stderr + installed.stdout):
            unavailable(
                f"no package index for the client's dependencies: {installed.stderr[-500:]}"
            )
        pytest.fail(f"pip install ./clients/python failed:\n{installed.stderr}")
    return root / "venv"


@dataclass
class Demo:
    url: str
    admin_token: str

    def new_key(self) -> str:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            headers = {"Authorization": f"Bearer {self.admin_token}"}
            user_id = http.post("/admin/users", headers=headers).json()["user_id"]
            code = http.post(f"/admin/users/{user_id}/invites", headers=headers).json()
            answer = http.post("/auth/exchange-invite", json={"invite_code": code["invite_code"]})
            key: str = answer.json()["api_key"]
            return key


#: `qwen3-tts-server demo`, with the suite's rule for unseeded generations (tests/conftest.py,
#: `_seeds_in_order`): seeds from a counter instead of the OS, so every run makes the same audio.
#: The tiny models' random weights sometimes end a designed voice's phrase before the 0.5 s a
#: voice needs (about 1 design in 8 on the demo: a 400 that is no client's doing); with the same
#: seeds each run, these tests cannot pass or fail by chance.
DEMO_WITH_SEEDS_IN_ORDER = """
import itertools, sys
from qwen3_tts_server.engine.step import stepper
stepper.random_seed = itertools.count(1).__next__
from qwen3_tts_server.cli import app
app(prog_name="qwen3-tts-server", args=sys.argv[1:])
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The offline demo: tiny offline models, generated secrets, a real port."""
    data_dir = tmp_path_factory.mktemp("demo") / "demo-data"
    port = _free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"ADMIN_TOKEN", "HMAC_SECRET", "DATA_DIR", "DATABASE_URL", "MEDIA_DIR"}
    }
    command = [sys.executable, "-c", DEMO_WITH_SEEDS_IN_ORDER, "demo", "--data-dir", str(data_dir)]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env={**env, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ready", "the demo", process=process)
        token = (data_dir / "secrets" / "admin_token").read_text().strip()
        yield Demo(url, token)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.communicate(timeout=60)


def _run(
    venv: Path, command: list[str], cwd: Path, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """A command with the client's virtualenv first on PATH (its python, its qwen3-tts)."""
    path = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', os.environ['PATH'])}"
    return subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **env, "PATH": path},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def readme_blocks(language: str) -> list[str]:
    """The README's code blocks in `language` that are marked `<!-- tested -->`."""
    text = README.read_text(encoding="utf-8")
    pattern = re.compile(r"(<!-- tested -->\n)?```" + language + r"\n(.*?)```", re.S)
    return [match.group(2) for match in pattern.finditer(text) if match.group(1)]


def test_every_python_example_in_the_readme_is_tested() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.count("```python") == len(readme_blocks("python")) >= 5


def test_the_client_installs_without_torch(venv: Path) -> None:
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert {"qwen3-tts-client", "httpx", "websockets"} <= names
    assert not names & {"torch", "numpy", "qwen3-tts-server", "qwen-tts", "transformers"}
    probe = "import sys, qwen3_tts_client; assert 'torch' not in sys.modules; print('ok')"
    result = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True)
    assert result.returncode == 0 and result.stdout == b"ok\n", result.stderr


def test_the_readme_examples_run_against_the_demo(venv: Path, demo: Demo, tmp_path: Path) -> None:
    (tmp_path / "ref.wav").write_bytes(reference_audio("wav"))
    script = tmp_path / "examples.py"
    script.write_text("\n".join(readme_blocks("python")), encoding="utf-8")
    key = demo.new_key()
    env = {"QWEN3_TTS_URL": demo.url, "QWEN3_TTS_API_KEY": key}
    result = _run(venv, ["python", str(script)], tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout

    with wave.open(str(tmp_path / "hello.wav")) as hello:
        assert hello.getframerate() == 24000 and hello.getnframes() > 0
    assert re.search(r"^tts \d+ 26 \d+ (eos|silence|length)$", out, re.M), out
    assert re.search(r"^stream \d+ at 24000 Hz$", out, re.M), out
    pcm = (tmp_path / "stream.pcm").read_bytes()
    assert pcm and len(pcm) % 2 == 0
    for name in ("0.wav", "1.wav", "2.wav"):
        assert (tmp_path / name).read_bytes()[:4] == b"RIFF"
    assert "refused 403 Invalid or revoked API key" in out
    assert "async [14, 16]" in out
    # "Hello!", "This text arrives in pieces, as a model writes it.": 6 + 50 characters
    assert re.search(r"^session.done None \{.*'total_tokens': 56", out, re.M), out
    realtime = (tmp_path / "realtime.pcm").read_bytes()
    assert realtime and len(realtime) % 2 == 0

    with httpx.Client(base_url=demo.url, headers={"Authorization": f"Bearer {key}"}) as http:
        usage = http.get("/usage").json()
    # tts + stream + 2 async + 2 realtime segments; one batch; two voices
    assert (usage["tts_calls"], usage["batch_calls"], usage["voices_created"]) == (6, 1, 2)
    assert "usage Usage(tokens_used_total=" in out


def test_the_readme_command_lines_run_against_the_demo(
    venv: Path, demo: Demo, tmp_path: Path
) -> None:
    [commands] = readme_blocks("bash")
    (tmp_path / "ref.wav").write_bytes(reference_audio("wav"))
    env = {"QWEN3_TTS_URL": demo.url, "QWEN3_TTS_API_KEY": demo.new_key()}
    result = _run(venv, ["bash", "-euo", "pipefail", "-c", commands], tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr

    lines = result.stdout.splitlines()
    cloned, designed = int(lines[0]), int(lines[1])
    assert re.match(r"voice_id\s+name\s+language", lines[2])
    assert {lines[3].split()[1], lines[4].split()[1]} == {"Geoff", "narrator"}
    assert lines[3].split()[0] == str(designed) and lines[4].split()[0] == str(cloned)
    with wave.open(str(tmp_path / "hello.wav")) as hello:
        assert hello.getframerate() == 24000
    pcm = (tmp_path / "hello.pcm").read_bytes()
    assert pcm and len(pcm) % 2 == 0
    assert (tmp_path / "ryan.mp3").stat().st_size > 0
    assert sorted(path.name for path in (tmp_path / "batch").iterdir()) == [
        "1.wav",
        "2.wav",
        "3.wav",
    ]
    progress = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert [line.split()[0] for line in progress] == ["[2/3]", "[3/3]"]
    assert "3 files in batch" in result.stdout
    usage = json.loads(result.stdout[result.stdout.index("{") :])
    # say x3, and the batch's last text alone is a /tts call
    assert (usage["tts_calls"], usage["batch_calls"], usage["voices_created"]) == (4, 1, 2)


@pytest.mark.parametrize(
    ("arguments", "key", "code", "message"),
    [
        (["usage"], "not-a-key", 3, "Invalid or revoked API key"),
        (["usage"], "", 3, "Missing bearer token"),
        (["say", "Hi.", "--voice", "Nobody", "-o", "x.wav"], None, 4, "no voice 'Nobody'"),
        (["say", "Hi.", "--voice", "v", "--language", "xx", "-o", "x.wav"], None, 6, "english"),
        (["say", "Hi.", "--voice", "v", "--speaker", "Ryan", "-o", "x.wav"], None, 2, "exactly"),
        (["say", "Hi.", "--voice", "v"], None, 2, "needs -o"),
        (["clone", "v2", "missing.wav", "--transcript", "Hi."], None, 2, "no such file"),
        (["bogus"], None, 2, "invalid choice"),
    ],
)
def test_command_line_exit_codes(
    venv: Path,
    demo: Demo,
    tmp_path: Path,
    arguments: list[str],
    key: str | None,
    code: int,
    message: str,
) -> None:
    user_key = demo.new_key()
    with httpx.Client(base_url=demo.url, timeout=60) as http:  # the user's voice "v"
        clone_voice(http, {"Authorization": f"Bearer {user_key}"}, name="v")
    env = {"QWEN3_TTS_URL": demo.url, "QWEN3_TTS_API_KEY": user_key if key is None else key}
    result = _run(venv, ["qwen3-tts", *arguments], tmp_path, env)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "x.wav").exists()  # nothing written for a refused call


def test_unreachable_server_and_play(venv: Path, demo: Demo, tmp_path: Path) -> None:
    env = {"QWEN3_TTS_URL": f"http://127.0.0.1:{_free_port()}", "QWEN3_TTS_API_KEY": "k"}
    result = _run(venv, ["qwen3-tts", "voices"], tmp_path, env)
    assert result.returncode == 8 and "127.0.0.1" in result.stderr

    # --play hands a complete file to the first player found; here a stand-in `aplay` that
    # keeps what it was given (no sound card in a test).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    player = bin_dir / "aplay"
    player.write_text(f'#!/bin/sh\n/bin/cp "$2" "{tmp_path}/played.wav"\n')
    player.chmod(0o755)
    env = {"QWEN3_TTS_URL": demo.url, "QWEN3_TTS_API_KEY": demo.new_key(), "PATH": str(bin_dir)}
    play = ["qwen3-tts", "say", "Hi.", "--speaker", "Ryan", "--play"]
    result = _run(venv, play, tmp_path, env)
    assert result.returncode == 0, result.stderr
    with wave.open(str(tmp_path / "played.wav")) as played:
        assert played.getnframes() > 0
    no_player = {**env, "PATH": str(tmp_path / "empty")}
    result = _run(
        venv, ["qwen3-tts", "say", "Hi.", "--speaker", "Ryan", "--play"], tmp_path, no_player
    )
    assert result.returncode == 2 and "no player for wav" in result.stderr
