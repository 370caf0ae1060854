"""The container files: compose.yml, the Dockerfile and .dockerignore, read as text.

They cannot be built here (no Docker), so these tests check what a build would rely on: no
secret defaults, the same pins and install order as the Makefile, the same requirements as
pyproject.toml, and a .dockerignore that lets in what the Dockerfile copies.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SECRETS = ("ADMIN_TOKEN", "HMAC_SECRET", "HF_TOKEN")


# --- compose.yml --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_secrets_have_no_default() -> None:
    """Secrets are bare names: passed only when set, never as a default or an empty string."""
    text = COMPOSE.read_text()
    for name in SECRETS:
        assert f"${{{name}" not in text, f"{name} is interpolated in compose.yml"
        assert not re.search(rf"^[ \t]*-?[ \t]*{name}[ \t]*[=:][ \t]*\S", text, re.M), name
        assert re.search(rf"^[ \t]*{name}:[ \t]*$", text, re.M), f"{name} is not passed through"


def test_compose_passes_secrets_through_every_service(compose: dict) -> None:
    servers = {
        name: service
        for name, service in compose["services"].items()
        if service["image"].startswith("qwen3-tts-server:")
    }
    assert len(servers) == 4  # the GPU and CPU services, the two replicas of `scale`
    for name, service in servers.items():
        env = service["environment"]
        for secret in SECRETS:
            assert secret in env, (name, secret)
            assert env[secret] is None, (name, secret)
        env_files = service["env_file"]
        assert {"path": ".env", "required": False} in env_files


def test_compose_gpu_service(compose: dict) -> None:
    gpu = compose["services"]["qwen3-tts"]
    assert gpu["container_name"] == "qwen3-tts-server"
    assert gpu["build"]["context"] == "."
    assert "profiles" not in gpu  # `docker compose up --build` starts it
    assert any(str(port).endswith(":8000") for port in gpu["ports"])
    assert "./models:/app/models" in gpu["volumes"]
    assert "./data:/app/data" in gpu["volumes"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "/health" in " ".join(gpu["healthcheck"]["test"])


def test_compose_cpu_service(compose: dict) -> None:
    cpu = compose["services"]["qwen3-tts-cpu"]
    assert cpu["profiles"] == ["cpu"]
    assert "deploy" not in cpu
    assert "cuda" not in cpu["build"]["args"]["BASE_IMAGE"]
    assert "cpu" in cpu["environment"]["DEVICE"]
    assert cpu["container_name"] != compose["services"]["qwen3-tts"]["container_name"]
    assert "./models:/app/models" in cpu["volumes"]


# --- Dockerfile and .dockerignore -------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def dockerfile_args() -> dict[str, str]:
    args = {}
    for name, value in dockerfile_instructions():
        if name == "ARG" and "=" in value:
            key, default = value.split("=", 1)
            args[key] = default
    return args


def test_dockerfile_pins_match_the_makefile() -> None:
    makefile = (ROOT / "Makefile").read_text()
    args = dockerfile_args()
    assert f"qwen-tts=={args['QWEN_TTS_VERSION']}" in makefile
    assert f"--no-deps qwen-asr=={args['QWEN_ASR_VERSION']}" in makefile
    assert f"torch=={args['TORCH_VERSION']}" in makefile
    assert "cuda" in args["BASE_IMAGE"]
    assert ":" in args["BASE_IMAGE"]
    assert not args["BASE_IMAGE"].endswith(":latest")


def test_dockerfile_install_order_and_runtime_shape() -> None:
    steps = dockerfile_instructions()
    runs = [value for name, value in steps if name == "RUN"]
    text = "\n".join(runs)
    assert text.index('--no-deps "qwen-tts==') < text.index("pip install -r /tmp/requirements.txt")
    assert text.index('"qwen-asr==') < text.index("pip install -r /tmp/requirements.txt")
    assert text.index("pip install -r /tmp/requirements.txt") < text.index(
        "pip install --no-deps ."
    )
    envs = " ".join(value for name, value in steps if name == "ENV")
    for secret in SECRETS:
        assert secret not in envs
    assert "MODELS_DIR=/app/models" in envs
    assert "DATA_DIR=/app/data" in envs
    users = [value for name, value in steps if name == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    assert any(name == "HEALTHCHECK" and "/health" in value for name, value in steps)
    assert any(name == "EXPOSE" and value == "8000" for name, value in steps)
    assert ("ENTRYPOINT", '["/usr/local/bin/entrypoint.sh"]') in steps


def test_dockerfile_requirement_list_matches_pyproject() -> None:
    """Run the Dockerfile's own pyproject -> requirements snippet on the real pyproject.toml."""
    run = next(value for name, value in dockerfile_instructions() if "tomllib" in value)
    code = re.search(r"python -c '([^']*)'", run)
    assert code is not None
    extras = dockerfile_args()["EXTRAS"]
    result = subprocess.run(
        ["python3", "-c", code.group(1), extras],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = list(project["dependencies"])
    for extra in filter(None, extras.split(",")):
        expected += project["optional-dependencies"][extra]
    assert result.stdout.splitlines() == expected
    assert not any(dep.lower().startswith(("qwen-tts", "qwen-asr")) for dep in expected)


def test_dockerignore_lets_in_everything_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    }
    assert "*" in DOCKERIGNORE.read_text().splitlines()
    for name, value in dockerfile_instructions():
        if name != "COPY":
            continue
        parts = [p for p in value.split() if not p.startswith("--")]
        for source in parts[:-1]:
            assert source.rstrip("/") in allowed, source
