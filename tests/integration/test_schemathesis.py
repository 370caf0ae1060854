"""The contract is the truth: schemathesis drives the real server (uvicorn, a real SQLite file,
the tiny real-architecture models) from the OpenAPI document it serves, in all four phases
(the schema's examples, its coverage of every constraint's edges, fuzzing, and stateful
sequences that follow the responses' ids), and holds every answer to that document: no 5xx,
no status, content type or header it does not declare, no body off its schema, invalid data
refused and valid data taken.

Valid data is taken (2xx), or refused with a documented status the schema cannot foretell:
401, 403, 404, 409 or 429 anywhere (schemathesis's defaults); the routes that make a voice or
speech may also answer 400, 402, 413 or 503 to it (`_BEYOND_THE_SCHEMA`). A 422 to valid
data, an accepted invalid body, a 5xx: each fails the test.

Everything is bounded so the test takes a minute or two on two cores: MAX_EXAMPLES cases per
operation and phase, texts of at most 80 characters, batches of at most 3, 12 frames per text
(the test engine's cap). No route is left out. SCHEMATHESIS_MAX_EXAMPLES and SCHEMATHESIS_SEED
change the bounds and the draw (README, Testing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from support import ADMIN_TOKEN, clone_voice, new_user_key

from conftest import LiveServer
from qwen3_tts_server.aligner.model import ForcedAligner
from qwen3_tts_server.audio.encode import FORMATS
from qwen3_tts_server.engine.base import LANGUAGES, Engine

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "50"))
SEED = os.environ.get("SCHEMATHESIS_SEED", "20260101")
PHASES = "examples,coverage,fuzzing,stateful"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
        "missing_required_header",
        "unsupported_method",
        "allow_header_conformance",
    ]
)
#: What valid data may meet on the routes that make a voice or speech, beyond the schema:
#: 400 (the audio's content, an unknown language, speaker or format, a text over
#: MAX_TEXT_LEN once stripped or over the model's context, a cloned voice with `instruct`),
#: 402 (the quota), 413 (the storage limit) and 503 (Retry-After: the queue, the model).
_BEYOND_THE_SCHEMA = ["2xx", "400", "401", "402", "403", "404", "409", "413", "429", "503"]
_MAKERS = "^/(tts|batchtts|clonevoice|designvoice|v1/)"

#: The two runs, one after the other on one server, each with its credentials: the user's
#: routes with the user's key, then /admin (which disables and revokes whatever users and keys
#: it finds, the test user's included) and /auth with the admin token.
RUNS = {"user": "^/(?!admin/|auth/)", "admin": "^/(admin|auth)/"}


def _config(token: str, voice_id: int, generation_id: int) -> str:
    """schemathesis.toml for one run: its credentials (the API's one security scheme), and
    real ids and names that half of the valid data draws from (the other half is drawn from
    the schema). `voice_id` and `speaker` in bodies are drawn from the schema only: a value
    put in by a dictionary could break their exactly-one-of rule."""
    return f"""
[auth.openapi.APIKeyHeader]
api_key = "Bearer {token}"

[[operations]]
include-path-regex = "{_MAKERS}"
checks.positive_data_acceptance.expected-statuses = {json.dumps(_BEYOND_THE_SCHEMA)}

[dictionaries.voices]
values = {json.dumps([voice_id])}
[dictionaries.voice_names]
values = {json.dumps([str(voice_id)])}
[dictionaries.generations]
values = {json.dumps([generation_id])}
[dictionaries.languages]
values = {json.dumps(list(LANGUAGES))}
[dictionaries.formats]
values = {json.dumps(list(FORMATS))}

[parameters]
"path.voice_id" = {{ dictionary = "voices", probability = 0.5 }}
"body.voice" = {{ dictionary = "voice_names", probability = 0.5 }}
"path.generation_id" = {{ dictionary = "generations", probability = 0.5 }}
"body.language" = {{ dictionary = "languages", probability = 0.5 }}
"body.format" = {{ dictionary = "formats", probability = 0.5 }}
"body.response_format" = {{ dictionary = "formats", probability = 0.5 }}
"""


def _seed_data(client: httpx.Client) -> tuple[str, int, int]:
    """A user's key, one voice, and one stored generation with captions."""
    _, headers = new_user_key(client)
    voice_id = clone_voice(client, headers)
    spoken = client.post(
        "/tts/timestamps",
        headers=headers,
        json={"text": "Hello there.", "voice_id": voice_id, "store": True},
    )
    assert spoken.status_code == 200, spoken.text
    key = headers["Authorization"].removeprefix("Bearer ")
    return key, voice_id, spoken.json()["generation_id"]


def _schemathesis(url: str, config: Path, paths: str) -> subprocess.CompletedProcess[str]:
    """One run of the CLI (the phases' own loop, and its report), bounded by MAX_EXAMPLES."""
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        f"--include-path-regex={paths}",
        f"--phases={PHASES}",
        f"--checks={CHECKS}",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--generation-database=none",
        "--request-timeout=120",
        "--no-color",
    ]
    return subprocess.run(
        command,
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_the_server_conforms_to_its_openapi_document(
    live_server: Callable[..., LiveServer],
    engine: Engine,
    aligner: ForcedAligner,
    tmp_path: Path,
) -> None:
    # A dev dependency (pyproject.toml): missing means a broken install, never a skip.
    assert SCHEMATHESIS.exists(), f"{SCHEMATHESIS} is missing: run `make install`"
    with live_server(
        load_engine=lambda: engine,
        load_aligner=lambda: aligner,
        max_text_len=80,
        max_batch_size=3,
        max_frames=12,
    ) as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            key, voice_id, generation_id = _seed_data(client)
        results = {}
        for side, paths in RUNS.items():
            config = tmp_path / side / "schemathesis.toml"
            config.parent.mkdir()
            token = key if side == "user" else ADMIN_TOKEN
            config.write_text(_config(token, voice_id, generation_id))
            results[side] = _schemathesis(server.url, config, paths)
            print(f"== {side} ==\n{results[side].stdout}")  # the report, with pytest -s
    failed = {side: run.stdout + run.stderr for side, run in results.items() if run.returncode}
    assert not failed, "\n\n".join(f"== {side} ==\n{output}" for side, output in failed.items())
