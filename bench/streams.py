"""Concurrent streamed /tts against a real server process, as a client hears it; prints JSON.

    python bench/streams.py --models DIR [--device auto|cpu|cuda] [--concurrency 1,8,32,64,128,256]
                            [--frames 50] [--max-batch N] [--timeout 180] [--budget S]

DIR is made by `qwen3-tts-server models make-tiny --dims {tiny,real-0.6b,real-1.7b} DIR`
(random weights: they never say EOS, so every stream is cut at `--frames` frames, 80 ms each).
The script starts `python -m qwen3_tts_server serve` on a free loopback port with the settings of
the environment plus its own (a temporary DATA_DIR, the models of DIR, DEVICE, ENGINE_MAX_BATCH,
MAX_FRAMES, queue bounds that admit the largest round, generated secrets), creates a user through
the invite flow, clones one voice from a generated tone, and then, for each concurrency c, opens
c streamed /tts calls at once (pcm, each its own one-sentence text, long enough that the frame cap
ends it) and measures each stream from the moment its request is sent:

* `first_audio`: until the first audio bytes arrive;
* `rtf`: total time / audio seconds received (s16le mono at the X-Sample-Rate the server sends);
* `safe_start`: the earliest start of playback, after the request, from which it never runs dry:
  the largest (arrival of a chunk - audio seconds received before it) over the stream's chunks;
* per round: p50/p95 of those, `aggregate_x_realtime` (all audio seconds / the round's wall
  time), errors, the engine's steps, mean rows per step and mean step time (from /metrics), and
  any GPU memory gauge /metrics exposes.

Everything is bounded: each request by `--timeout`, server start by `--ready-timeout`, all rounds
together by `--budget` (a round gets no more than what is left of it); the rounds stop once one
has more than half its streams failed; the server is stopped (SIGTERM, then SIGKILL) however the
script ends. Each round's figures also go to stderr as it ends, so a cut run still tells them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from qwen3_tts_server.engine.text.bounds import FRAMES_PER_SECOND, LATIN_CHARS_PER_SECOND

#: The texts are drawn from these words: plain lowercase Latin, no digits, no punctuation that
#: could end a sentence (each text must stay one sentence, one chunk).
_PHRASE = (
    "morning light falls across the quiet harbour while small boats drift slowly past old stone "
    "walls and gulls circle above the market where traders call out their prices to anyone who "
    "will listen before the tide turns and the fishermen return with their silver catch"
)
WORDS = _PHRASE.split()
#: GPU memory gauges a server may expose (none is required); matched on the sample's name.
GPU_MEMORY = re.compile(r"(gpu|cuda).*(memory|bytes)|memory.*(gpu|cuda)")
BYTES_PER_SAMPLE = 2  # pcm: s16le mono


@dataclass
class Stream:
    """One streamed call as the client saw it (seconds from the request being sent)."""

    first_audio: float = math.nan
    total: float = math.nan
    audio_seconds: float = 0.0
    safe_start: float = 0.0
    queue_ms: float = math.nan
    error: str | None = None

    @property
    def rtf(self) -> float:
        return self.total / self.audio_seconds if self.audio_seconds else math.inf


@dataclass
class Server:
    """The server subprocess and how to reach it."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    admin: dict[str, str] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _model_env(models: Path) -> dict[str, str]:
    """The model settings for a `models make-tiny` folder: base/, and the other two if there."""
    if not (models / "base" / "config.json").is_file():
        raise SystemExit(f"{models}/base is not a model folder (make it with `models make-tiny`)")

    def optional(variant: str) -> str:
        return str(models / variant) if (models / variant / "config.json").is_file() else ""

    return {
        "MODELS_DIR": str(models),
        "MODEL_BASE_REPO": str(models / "base"),
        "MODEL_VOICEDESIGN_REPO": optional("voice_design"),
        "MODEL_CUSTOM_REPO": optional("custom_voice"),
        "ALLOW_DOWNLOAD": "false",
        "MODEL_ALIGNER_REPO": "",  # streams need no word timestamps (and nothing downloads)
    }


def _dims(models: Path) -> str | None:
    """The size preset recorded in the Base model's config.json by `models make-tiny`."""
    config = json.loads((models / "base" / "config.json").read_text())
    return next((str(v) for k, v in config.items() if k.endswith("_dims")), None)


def server_env(args: argparse.Namespace, data_dir: Path, text_chars: int) -> dict[str, str]:
    """The environment's settings, overridden by what this benchmark needs."""
    widest = max(args.concurrency)
    wanted = {
        **_model_env(args.models),
        "DATA_DIR": str(data_dir),
        "DEVICE": args.device,
        "ENGINE_MAX_BATCH": str(args.max_batch or widest),
        "MAX_FRAMES": str(args.frames),
        "QUEUE_MAX": str(max(widest, int(os.environ.get("QUEUE_MAX", "64")))),
        "USER_QUEUE_MAX": str(max(widest, int(os.environ.get("USER_QUEUE_MAX", "16")))),
        "CHUNK_MAX_CHARS": str(max(text_chars, int(os.environ.get("CHUNK_MAX_CHARS", "300")))),
        "ADMIN_TOKEN": secrets.token_urlsafe(24),
        "HMAC_SECRET": secrets.token_urlsafe(32),
        "RECOVERY_GRACE_S": "0",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    }
    return {**os.environ, **wanted}


@contextlib.contextmanager
def running_server(env: dict[str, str], log: Path) -> Iterator[Server]:
    """`python -m qwen3_tts_server serve` on a free loopback port, stopped on the way out."""
    port = _free_port()
    command = [sys.executable, "-m", "qwen3_tts_server", "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    server.admin = {"Authorization": f"Bearer {env['ADMIN_TOKEN']}"}
    try:
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _log_tail(server: Server, lines: int = 15) -> str:
    return "\n".join(server.log.read_text(errors="replace").splitlines()[-lines:])


def wait_ready(server: Server, timeout: float) -> float:
    """Seconds until /ready is 200; fails at once when the process exits or the model fails."""
    started = time.monotonic()
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited ({server.process.returncode}):\n{_log_tail(server)}")
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(f"{server.url}/ready", timeout=5)
            if response.status_code == 200:
                return time.monotonic() - started
            if response.json().get("model") == "failed":
                raise RuntimeError(f"model failed to load: {response.json().get('error')}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"not ready after {timeout:.0f} s:\n{_log_tail(server)}")
        time.sleep(0.25)


def tone_wav(seconds: float = 3.0, rate: int = 24000) -> bytes:
    """A voiced-sounding reference: a 140 Hz tone with harmonics, gliding and pulsing."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * (140 * t + 6 * np.sin(2 * np.pi * 0.5 * t))
    voice = sum(np.sin(k * phase) / k for k in (1, 2, 3, 4))
    pulse = 0.55 + 0.45 * np.sin(2 * np.pi * 3.5 * t) ** 2
    samples = (0.25 * voice * pulse * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def _checked(response: httpx.Response) -> Any:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url.path}: {response.status_code} {response.text}")
    return response.json()


def user_and_voice(server: Server) -> tuple[dict[str, str], int]:
    """An API key through the invite flow, and one voice cloned from a tone."""
    with httpx.Client(base_url=server.url, timeout=120) as client:
        user_id = _checked(client.post("/admin/users", headers=server.admin))["user_id"]
        invite = _checked(client.post(f"/admin/users/{user_id}/invites", headers=server.admin))
        exchanged = client.post(
            "/auth/exchange-invite", json={"invite_code": invite["invite_code"]}
        )
        headers = {"Authorization": f"Bearer {_checked(exchanged)['api_key']}"}
        voice = client.post(
            "/clonevoice",
            headers=headers,
            data={"name": "bench", "transcript": "One two three, a voice for the benchmark."},
            files={"file": ("tone.wav", tone_wav(), "audio/wav")},
        )
        return headers, int(_checked(voice)["voice_id"])


def text_chars(frames: int) -> int:
    """Characters of a text whose ordinary pace needs more than `frames` frames, so the frame cap
    (not the silence or loop guard, which wait until the text should be spoken) ends it."""
    return math.ceil(frames * LATIN_CHARS_PER_SECOND / FRAMES_PER_SECOND) + 24


def longest_text(frames: int) -> int:
    """An upper bound on the length of `sentence(text_chars(frames), ...)`."""
    return text_chars(frames) + max(map(len, WORDS)) + 2


def sentence(chars: int, rng: random.Random) -> str:
    """One sentence of at least `chars` characters, different for every call of `rng`."""
    words: list[str] = []
    while len(" ".join(words)) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words).capitalize() + "."


async def one_stream(
    client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any], timeout: float
) -> Stream:
    """One streamed /tts, timed chunk by chunk; any failure is recorded, never raised."""
    stream = Stream()
    sent = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("POST", "/tts", headers=headers, json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:200]
                    stream.error = f"{response.status_code} {detail}"
                    return stream
                rate = int(response.headers["X-Sample-Rate"])
                stream.queue_ms = float(response.headers.get("X-Queue-Ms", "nan"))
                received = 0
                async for chunk in response.aiter_raw():
                    if not chunk:
                        continue
                    now = time.perf_counter() - sent
                    if received == 0:
                        stream.first_audio = now
                    stream.safe_start = max(stream.safe_start, now - received / (2 * rate))
                    received += len(chunk)
        stream.total = time.perf_counter() - sent
        stream.audio_seconds = received / (BYTES_PER_SAMPLE * rate)
        if not received:
            stream.error = "no audio"
    except TimeoutError:
        stream.error = f"no end after {timeout:.0f} s"
    except (httpx.HTTPError, httpx.StreamError, OSError, KeyError, ValueError) as error:
        stream.error = f"{type(error).__name__}: {error}"[:200]
    return stream


def scrape(url: str) -> dict[str, float]:
    """The /metrics samples this benchmark reads, by sample name (labels summed)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("qwen3_tts_engine_") or GPU_MEMORY.search(sample.name):
                samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
                if "phase" in sample.labels:
                    samples[f"{sample.name}:{sample.labels['phase']}"] = sample.value
    return samples


def model_info(url: str) -> dict[str, str]:
    """The loaded model's labels (model, device, dtype) from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "qwen3_tts_model_info" and family.samples:
            return dict(family.samples[0].labels)
    return {}


def _pct(values: Sequence[float], q: float, digits: int = 3) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return round(float(np.percentile(finite, q)), digits) if finite else None


def engine_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the engine did in one round: steps, mean rows per step, mean step time, GPU memory."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    steps = delta("qwen3_tts_engine_steps_total")
    figures: dict[str, Any] = {"engine_steps": int(steps)}
    if steps:
        figures["rows_per_step"] = round(delta("qwen3_tts_engine_frames_total") / steps, 2)
        timed = delta("qwen3_tts_engine_step_duration_seconds_count")
        if timed:
            step_s = delta("qwen3_tts_engine_step_duration_seconds_sum") / timed
            figures["step_ms_mean"] = round(step_s * 1000, 2)
    phases = {
        phase: round(delta(f"qwen3_tts_engine_seconds_total:{phase}"), 2)
        for phase in ("admit", "step", "decode")
    }
    if any(phases.values()):
        figures["loop_seconds"] = phases  # where the inference thread's time went
    memory = {name: value for name, value in after.items() if GPU_MEMORY.search(name)}
    if memory:
        figures["gpu_memory"] = memory
    used = gpu_memory_used_mib()
    if used is not None:
        figures["gpu_memory_used_mib"] = used
    return figures


def gpu_memory_used_mib() -> int | None:
    """Memory in use on GPU 0 (all processes), from nvidia-smi where there is one."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
    result = subprocess.run(query, capture_output=True, text=True, timeout=10, check=False)
    lines = result.stdout.split()
    return int(lines[0]) if result.returncode == 0 and lines else None


async def run_round(
    server: Server,
    headers: dict[str, str],
    voice_id: int,
    c: int,
    args: argparse.Namespace,
    timeout: float,
) -> dict[str, Any]:
    """c streams at once, each its own text, each given `timeout` s; the round's figures."""
    rng = random.Random(c)
    chars = text_chars(args.frames)
    bodies = [
        {
            "text": sentence(chars, rng),
            "voice_id": voice_id,
            "language": "English",
            "format": "pcm",
            "stream": True,
            "store": False,
        }
        for _ in range(c)
    ]
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    before = await asyncio.to_thread(scrape, server.url)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=timeout) as client:
        started = time.perf_counter()
        streams = await asyncio.gather(
            *(one_stream(client, headers, body, timeout) for body in bodies)
        )
        wall = time.perf_counter() - started
    after = await asyncio.to_thread(scrape, server.url)
    good = [s for s in streams if s.error is None]
    errors = [s.error for s in streams if s.error is not None]
    audio = sum(s.audio_seconds for s in good)
    return {
        "concurrency": c,
        "first_audio_p50": _pct([s.first_audio for s in good], 50),
        "first_audio_p95": _pct([s.first_audio for s in good], 95),
        "rtf_p50": _pct([s.rtf for s in good], 50),
        "rtf_p95": _pct([s.rtf for s in good], 95),
        "safe_start_p95": _pct([s.safe_start for s in good], 95),
        "queue_ms_p95": _pct([s.queue_ms for s in good], 95, 1),
        "audio_s_per_stream": _pct([s.audio_seconds for s in good], 50),
        "aggregate_x_realtime": round(audio / wall, 3) if wall else None,
        "wall_s": round(wall, 3),
        "errors": len(errors),
        **({"error_examples": sorted(set(errors))[:3]} if errors else {}),
        **engine_figures(before, after),
        "load_1m": round(os.getloadavg()[0], 2),
    }


async def run_rounds(
    server: Server, headers: dict[str, str], voice_id: int, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], str | None]:
    """The rounds in order; stops after one with more than half its streams failed."""
    rounds: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.budget
    for c in args.concurrency:
        left = deadline - time.monotonic()
        if left < 1:
            return rounds, f"--budget of {args.budget:.0f} s spent before concurrency {c}"
        result = await run_round(server, headers, voice_id, c, args, min(args.timeout, left))
        rounds.append(result)
        print(json.dumps(result), file=sys.stderr, flush=True)  # progress, in case of a cut
        if result["errors"] * 2 > c:
            return rounds, f"{result['errors']} of {c} streams failed at concurrency {c}"
    return rounds, None


def _concurrency(value: str) -> list[int]:
    levels = [int(part) for part in value.split(",") if part.strip()]
    if not levels or min(levels) < 1 or max(levels) > 256:
        raise argparse.ArgumentTypeError("a comma-separated list of integers in 1..256")
    return levels


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--models", type=Path, required=True, help="a `models make-tiny` folder")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--concurrency", type=_concurrency, default=[1, 8, 32, 64, 128, 256])
    parser.add_argument(
        "--server-log", type=Path, default=None, help="keep the server's output in this file"
    )
    parser.add_argument("--frames", type=int, default=50, help="frame cap per stream (80 ms)")
    parser.add_argument("--max-batch", type=int, help="ENGINE_MAX_BATCH (default: top concurrency)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per request")
    parser.add_argument(
        "--budget", type=float, default=math.inf, help="seconds for all rounds (then stop)"
    )
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to /ready")
    parser.add_argument("--warmup", type=int, default=1, help="unreported streams before rounds")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    args.models = args.models.resolve()
    load = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        env = server_env(args, Path(tmp) / "data", longest_text(args.frames))
        report: dict[str, Any] = {
            "settings": {
                "models": str(args.models),
                "dims": _dims(args.models),
                "device": args.device,
                "frames": args.frames,
                "engine_max_batch": int(env["ENGINE_MAX_BATCH"]),
                "concurrency": args.concurrency,
                "timeout_s": args.timeout,
                "text_chars": text_chars(args.frames),
                **{k.lower(): env[k] for k in ("DTYPE", "QUANT", "TORCH_THREADS") if k in env},
            },
            "load_1m": load,
        }
        with running_server(env, args.server_log or Path(tmp) / "server.log") as server:
            report["ready_s"] = round(wait_ready(server, args.ready_timeout), 1)
            headers, voice_id = user_and_voice(server)
            report["server_model"] = model_info(server.url)
            if args.warmup:
                asyncio.run(run_round(server, headers, voice_id, args.warmup, args, args.timeout))
            rounds, stopped = asyncio.run(run_rounds(server, headers, voice_id, args))
            report["rounds"] = rounds
            if stopped:
                report["stopped_early"] = stopped
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
