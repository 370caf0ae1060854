"""Server figures over HTTP on the tiny models, in-process; prints one JSON object.

    .venv/bin/python bench/api.py [--models-dir DIR] [--frames 24] [--requests 20] [--rounds 5]
    .venv/bin/python bench/api.py --real-dims --engines stock:float32,ours:bfloat16 \
        --requests 2 --rounds 0 --warmups 1

The app is the real one (`create_app`: SQLite in a temp data dir, the scheduler, encoding, usage
rows), driven by `fastapi.testclient.TestClient` with its lifespan running. The engine is a
step engine (or stock qwen-tts behind the step interface, stock_engine.py) on the tiny base model
behind `TimedEngine`, a thin proxy that forwards every Engine method and adds up the seconds
spent admitting and stepping (the loop's decoding of the frames into audio is not engine time
here: it shows in the overhead). What it measures, and why:

* `tts_overhead`: for sequential /tts requests (fixed seed and text, so every generation is the
  same length), client latency minus engine time = what the server adds around the model (auth,
  quota and voice lookup, scheduler hand-off, encoding, database writes, HTTP). Medians, and
  `overhead_to_engine` = median overhead / median engine time. `handoff_ms` = the service's
  X-Latency-Ms (scheduler submit → result) minus engine time: the queue and thread hand-off.
* `encode`: `audio.encode.encode` of one real tiny-model output (the /tts output above) in each
  format, as ms of work per second of audio (median); short clips make per-call costs show.
* `batching`: the same texts as 8 sequential /tts, one /batchtts, and 8 concurrent /tts (one
  thread each), unseeded. The step loop runs the texts side by side in its slots (each leaves
  its slot when it ends); `stock` runs one text per call, one after another. Wall times are
  medians over interleaved rounds; ratios compare modes within this run (the machine is shared
  and noisy).
  `max_slots_per_step` is the most texts one engine step ran side by side in the last round.
Generation is capped at `--frames` frames (80 ms each); the tiny model's weights are random, so
EOS may come earlier: generated frames (audio length / 80 ms) are reported next to the times.
Figures on the tiny model show server overheads and batching gains, not real-model speed.
`--real-dims` serves the random model with the real 0.6B sizes instead (built once under
`--data-dir`, see bench/speed.py): then `tts_overhead.latency_per_audio_s` (client latency per
second of audio, < 1 is faster than real time) is the server's speed as a client sees it.
`--engines` runs the whole measurement once per engine and dtype, one app after the other:
`stock` is the engine before the step loop (stock qwen-tts per text, stock_engine.py), `ours` /
`ours-int8` the step loop the server runs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from fastapi.testclient import TestClient

from qwen3_tts_server.app import create_app
from qwen3_tts_server.audio.encode import FORMATS, encode
from qwen3_tts_server.config import Settings
from qwen3_tts_server.engine.base import Audio, Engine, EngineInfo, Item, Sampling
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.model.tiny import cached_models, make_tiny_models
from qwen3_tts_server.engine.step.stepper import Admission, Slot, StepEngine
from stock_engine import StockEngine

ADMIN_TOKEN = secrets.token_urlsafe(24)
FRAME_S = 0.08
SEED = 7
TEXT = "The benchmark sentence is long enough that every generation runs to the cap."
TEXTS = [
    f"Sentence number {i} of the batch, long enough to run to the frame cap." for i in range(8)
]


class TimedEngine:
    """Forwards every Engine method; adds up the seconds spent admitting and stepping, the
    audio made (frames x 80 ms, counted when a slot is released) and the slots per step."""

    def __init__(self, inner: Engine) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.synth_seconds = 0.0
        self.audio_seconds = 0.0
        self.call_sizes: list[int] = []
        #: The last /tts output as the client got it (set by `_tts_overhead`).
        self.last_output: Audio | None = None

    def info(self) -> EngineInfo:
        return self._inner.info()

    @property
    def frame_cap(self) -> int:
        return self._inner.frame_cap

    def create_prompt(self, audio: Audio, transcript: str | None) -> bytes:
        return self._inner.create_prompt(audio, transcript)

    @property
    def prefill_tokens(self) -> int:
        return self._inner.prefill_tokens

    def prepare(self, item: Item, sampling: Sampling, budget: int) -> Admission:
        started = time.perf_counter()
        admission = self._inner.prepare(item, sampling, budget)
        with self._lock:
            self.synth_seconds += time.perf_counter() - started
        return admission

    def prefill(self, admissions: Sequence[Admission]) -> list[Slot]:
        started = time.perf_counter()
        slots = self._inner.prefill(admissions)
        with self._lock:
            self.synth_seconds += time.perf_counter() - started
        return slots

    def step(self, slots: Sequence[Slot]) -> None:
        started = time.perf_counter()
        self._inner.step(slots)
        with self._lock:
            self.synth_seconds += time.perf_counter() - started
            self.call_sizes.append(len(slots))

    def release(self, slot: Slot) -> None:
        self._inner.release(slot)
        with self._lock:
            self.audio_seconds += slot.count * FRAME_S

    def warm_up(self) -> None:
        self._inner.warm_up()

    def snapshot(self) -> tuple[float, float, int]:
        """(engine seconds, audio seconds, steps) so far; differences measure one stretch."""
        with self._lock:
            return self.synth_seconds, self.audio_seconds, len(self.call_sizes)


def _reference_wav(seconds: float = 2.0, rate: int = 24000) -> bytes:
    """A speech-like reference (a tone shaped by a syllable-rate envelope, plus noise)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    voiced = 0.3 * np.sin(2 * np.pi * 150 * t) + 0.05 * rng.standard_normal(t.size)
    buffer = io.BytesIO()
    sf.write(buffer, (envelope * voiced).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _ok(response: Any) -> Any:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url.path}: {response.status_code} {response.text}")
    return response


def _user_and_voice(client: TestClient) -> tuple[dict[str, str], int]:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    user_id = _ok(client.post("/admin/users", headers=admin)).json()["user_id"]
    invite = _ok(client.post(f"/admin/users/{user_id}/invites", headers=admin)).json()
    exchanged = client.post("/auth/exchange-invite", json={"invite_code": invite["invite_code"]})
    headers = {"Authorization": f"Bearer {_ok(exchanged).json()['api_key']}"}
    response = client.post(
        "/clonevoice",
        headers=headers,
        data={
            "name": "bench",
            "transcript": "Hello there, this is my voice.",
            "language": "English",
        },
        files={"file": ("ref.wav", _reference_wav())},
    )
    return headers, int(_ok(response).json()["voice_id"])


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _tts_overhead(
    client: TestClient,
    engine: TimedEngine,
    body: dict[str, Any],
    headers: dict[str, str],
    n: int,
    warmups: int,
) -> dict[str, Any]:
    for _ in range(warmups):  # first requests pay lazy imports, connection and cache setup
        _ok(client.post("/tts", json=body, headers=headers))
    latencies, engine_times, handoffs = [], [], []
    for _ in range(n):
        before, _, _ = engine.snapshot()
        started = time.perf_counter()
        response = _ok(client.post("/tts", json=body, headers=headers))
        latency = time.perf_counter() - started
        samples, rate = sf.read(io.BytesIO(response.content), dtype="float32")
        engine.last_output = Audio(samples, rate)
        spent = engine.snapshot()[0] - before
        latencies.append(latency)
        engine_times.append(spent)
        handoffs.append(int(response.headers["X-Latency-Ms"]) / 1000 - spent)
    overheads = [lat - eng for lat, eng in zip(latencies, engine_times, strict=True)]
    engine_median = statistics.median(engine_times)
    overhead_median = statistics.median(overheads)
    assert engine.last_output is not None
    return {
        "requests": n,
        "audio_s": round(engine.last_output.duration_s, 3),
        "latency_ms": _ms(statistics.median(latencies)),
        "engine_ms": _ms(engine_median),
        "overhead_ms": _ms(overhead_median),
        "overhead_ms_max": _ms(max(overheads)),
        "handoff_ms": _ms(statistics.median(handoffs)),
        "overhead_to_engine": round(overhead_median / engine_median, 3),
        "latency_per_audio_s": round(
            statistics.median(latencies) / engine.last_output.duration_s, 3
        ),
    }


def _encode_figures(audio: Audio, repeats: int) -> dict[str, dict[str, float]]:
    figures = {}
    for fmt in FORMATS:
        run = partial(encode, audio, fmt)
        data = run()  # first call pays codec initialisation; not what a warm server sees
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        figures[fmt] = {
            "ms": _ms(statistics.median(times)),
            "ms_per_audio_s": round(statistics.median(times) * 1000 / audio.duration_s, 2),
            "bytes": len(data),
        }
    return figures


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _batching(
    client: TestClient,
    engine: TimedEngine,
    voice_id: int,
    headers: dict[str, str],
    rounds: int,
) -> dict[str, Any]:
    bodies = [{"text": text, "voice_id": voice_id, "language": "English"} for text in TEXTS]

    def sequential() -> None:
        for body in bodies:
            _ok(client.post("/tts", json=body, headers=headers))

    def batch() -> None:
        body = {"texts": TEXTS, "voice_id": voice_id, "language": "English"}
        _ok(client.post("/batchtts", json=body, headers=headers))

    def concurrent() -> None:
        barrier = threading.Barrier(len(bodies))
        errors: list[BaseException] = []

        def one(body: dict[str, Any]) -> None:
            barrier.wait()
            try:
                _ok(client.post("/tts", json=body, headers=headers))
            except BaseException as exc:  # surfaced below, on the main thread
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(body,)) for body in bodies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    modes = {"sequential_tts": sequential, "batchtts": batch, "concurrent_tts": concurrent}
    walls: dict[str, list[float]] = {name: [] for name in modes}
    frames: dict[str, list[int]] = {name: [] for name in modes}
    calls: dict[str, int] = {}
    for _ in range(rounds):
        for name, run in modes.items():
            _, audio_before, calls_before = engine.snapshot()
            walls[name].append(_timed(run))
            _, audio_after, _ = engine.snapshot()
            frames[name].append(round((audio_after - audio_before) / FRAME_S))
            calls[name] = max(engine.call_sizes[calls_before:], default=0)
    wall = {name: statistics.median(times) for name, times in walls.items()}
    return {
        "texts": len(TEXTS),
        "rounds": rounds,
        "wall_s": {name: round(seconds, 3) for name, seconds in wall.items()},
        "frames_per_round": frames,
        "max_slots_per_step": calls,
        "batchtts_vs_sequential": round(wall["batchtts"] / wall["sequential_tts"], 3),
        "concurrent_vs_sequential": round(wall["concurrent_tts"] / wall["sequential_tts"], 3),
    }


def run(
    base_dir: Path,
    data_dir: Path,
    frames: int,
    requests: int,
    rounds: int,
    dtype: str,
    warmups: int = 3,
    kind: str = "stock",
) -> dict[str, Any]:
    torch.manual_seed(0)
    stock = QwenEngine.load(base_dir, device="cpu", dtype=dtype, max_new_tokens_cap=frames)
    inner: Engine = StockEngine(stock)
    if kind != "stock":
        inner = StepEngine(stock, quant="int8" if kind == "ours-int8" else "none")
    engine = TimedEngine(inner)
    models_dir = base_dir.parent
    settings = Settings(
        data_dir=data_dir,
        admin_token=ADMIN_TOKEN,
        hmac_secret=secrets.token_urlsafe(32),
        models_dir=models_dir,
        allow_download=False,
        log_json=False,
    )
    app = create_app(settings, lambda: engine)
    with TestClient(app) as client:
        if not app.state.context.runtime.wait(timeout=300):
            raise RuntimeError(f"model not ready: {client.get('/ready').text}")
        headers, voice_id = _user_and_voice(client)
        body = {"text": TEXT, "voice_id": voice_id, "language": "English", "seed": SEED}
        overhead = _tts_overhead(client, engine, body, headers, requests, warmups)
        speech = engine.last_output
        batching = _batching(client, engine, voice_id, headers, rounds) if rounds else None
    assert speech is not None
    return {
        "model": engine.info().base_model_id,
        "engine": kind,
        "dtype": engine.info().dtype,
        "torch_threads": torch.get_num_threads(),
        "max_new_tokens": frames,
        "tts_overhead": overhead,
        "encode": {"audio_s": round(speech.duration_s, 3), **_encode_figures(speech, 20)},
        "batching": batching,
        "loadavg": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models-dir", type=Path, help="tiny models (built in a temp dir if unset)"
    )
    parser.add_argument("--real-dims", action="store_true", help="the real 0.6B sizes")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="real-dims cache")
    parser.add_argument(
        "--engines",
        default="stock:float32",
        help="comma-separated engine:dtype, engine one of stock, ours (the step loop), ours-int8",
    )
    parser.add_argument("--frames", type=int, default=24, help="max_new_tokens cap per call")
    parser.add_argument("--requests", type=int, default=20, help="sequential /tts for overhead")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the batching modes")
    parser.add_argument("--warmups", type=int, default=3, help="/tts calls before timing")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.real_dims:
            base = cached_models(args.data_dir / "models-real-0.6b", dims="real-0.6b").base
        elif args.models_dir is not None:
            base = args.models_dir / "base"
        else:
            base = make_tiny_models(root / "models").base
        for index, spec in enumerate(args.engines.split(",")):
            kind, dtype = spec.split(":")
            data_dir = root / f"data-{index}"
            settings = (args.frames, args.requests, args.rounds, dtype, args.warmups, kind)
            results.append(run(base, data_dir, *settings))
    print(json.dumps(results[0] if len(results) == 1 else results, indent=1))


if __name__ == "__main__":
    main()
