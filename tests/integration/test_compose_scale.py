"""compose.yml as `docker compose --profile scale config` would check it, without Docker: the
file against the Compose Specification's JSON schema (vendored: compose/compose-spec.json, see
compose/README.md), the references between services, volumes and files that Compose resolves,
and the scale profile's shape (PostgreSQL on its socket, two replicas sharing one data volume,
nginx in front with the settings docs/deployment.md recommends)."""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from support import new_user_key, reference_audio, wait_for_http

from conftest import LiveServer
from qwen3_tts_client import AsyncClient, Client, PayloadTooLargeError, RealtimeEvent
from qwen3_tts_server.engine.base import Engine

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yml"
SCHEMA = Path(__file__).with_name("compose") / "compose-spec.json"
NGINX = ROOT / "deploy" / "nginx.conf"
REPLICAS = ("qwen3-tts-1", "qwen3-tts-2")
PROXY = "qwen3-tts-proxy"
DATABASE = "qwen3-tts-db"

#: ${NAME}, ${NAME:-default}, ${NAME-default}: the forms Compose interpolates.
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def interpolated(value: Any) -> Any:
    """The file as Compose sees it with no variable set: each ${NAME:-default} as its default."""
    if isinstance(value, dict):
        return {key: interpolated(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolated(item) for item in value]
    if isinstance(value, str):
        return _VARIABLE.sub(lambda match: match.group(2) or "", value)
    return value


def enabled(compose: dict[str, Any], profiles: set[str]) -> dict[str, Any]:
    """The services `--profile ...` turns on: those without profiles, and those in one of them."""
    return {
        name: service
        for name, service in compose["services"].items()
        if not service.get("profiles") or profiles & set(service["profiles"])
    }


def test_compose_yml_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    for document in (compose, interpolated(compose)):
        errors = sorted(validator.iter_errors(document), key=lambda error: list(error.path))
        assert not errors, "\n".join(
            f"{'/'.join(map(str, error.path))}: {error.message}" for error in errors
        )


@pytest.mark.parametrize("profiles", [set(), {"cpu"}, {"scale"}])
def test_every_reference_resolves_under_each_profile(
    compose: dict[str, Any], profiles: set[str]
) -> None:
    """What `docker compose config` refuses beyond the schema: a dependency on a service that
    is missing or not enabled, an undeclared named volume, a missing bind-mounted file."""
    services = enabled(compose, profiles)
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        depends = service.get("depends_on") or []
        for target in depends if isinstance(depends, list) else depends.keys():
            assert target in services, f"{name} depends on {target}, not enabled by {profiles}"
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                path = ROOT / source
                # ./models and ./data are created by Docker on first start; files must exist.
                assert path.is_file() or path.name in {"models", "data"}, f"{name}: {source}"
            else:
                assert source in declared_volumes, f"{name}: volume {source} is not declared"


def test_the_scale_profile_is_opt_in(compose: dict[str, Any]) -> None:
    assert set(enabled(compose, set())) == {"qwen3-tts"}
    scale = set(enabled(compose, {"scale"}))
    assert scale == {"qwen3-tts", DATABASE, *REPLICAS, PROXY}
    published = [service.get("ports", []) for service in enabled(compose, {"scale"}).values()]
    ports = [str(port).rsplit(":", 1)[0] for group in published for port in group]
    assert len(ports) == len(set(interpolated(ports)))  # beside the single server, no clash


def test_postgres_listens_on_its_socket_only(compose: dict[str, Any]) -> None:
    db = compose["services"][DATABASE]
    assert "ports" not in db and "expose" not in db
    assert db["command"] == ["postgres", "-c", "listen_addresses="]
    assert "POSTGRES_PASSWORD" not in db["environment"]  # no secret, so none with a default
    socket_volume = next(v for v in db["volumes"] if v.endswith(":/var/run/postgresql"))
    mounting = [
        name
        for name, service in compose["services"].items()
        if any(v.split(":")[0] == socket_volume.split(":")[0] for v in service.get("volumes", []))
    ]
    assert sorted(mounting) == sorted([DATABASE, *REPLICAS])  # not the proxy
    assert "pg_isready" in db["healthcheck"]["test"]


def test_two_replicas_share_the_database_and_the_data_volume(compose: dict[str, Any]) -> None:
    replicas = [compose["services"][name] for name in REPLICAS]
    for replica in replicas:
        env = replica["environment"]
        assert env["DATABASE_URL"] == "postgresql+psycopg://tts@/tts?host=/run/postgresql"
        assert env["MEDIA_DIR"].startswith(env["DATA_DIR"])
        for secret in ("ADMIN_TOKEN", "HMAC_SECRET", "HF_TOKEN"):
            assert env[secret] is None  # passed through when set, never a default
        assert "ports" not in replica  # reached through the proxy only
        assert "/health" in " ".join(replica["healthcheck"]["test"])
        assert replica["depends_on"][DATABASE]["condition"] == "service_healthy"
    assert replicas[0]["volumes"] == replicas[1]["volumes"]
    assert "scale-data:/app/data" in replicas[0]["volumes"]
    # the second starts once the first has downloaded the models and migrated the database
    assert replicas[1]["depends_on"]["qwen3-tts-1"]["condition"] == "service_healthy"


def _directives(config: str) -> list[tuple[tuple[str, ...], str, str]]:
    """(enclosing blocks, directive, arguments) of an nginx configuration, comments dropped."""
    found: list[tuple[tuple[str, ...], str, str]] = []
    blocks: list[str] = []
    text = re.sub(r"#[^\n]*", "", config)
    for token in re.finditer(r"([^{};]+)([{};])|}", text):
        if token.group(0) == "}" or token.group(2) == "}":
            blocks.pop()
            continue
        statement = " ".join(token.group(1).split())
        if token.group(2) == "{":
            blocks.append(statement)
        elif statement:
            name, _, arguments = statement.partition(" ")
            found.append((tuple(blocks), name, arguments))
    assert not blocks, "unbalanced braces"
    return found


def test_the_proxy_follows_the_deployment_guide(compose: dict[str, Any]) -> None:
    proxy = compose["services"][PROXY]
    assert proxy["volumes"] == ["./deploy/nginx.conf:/etc/nginx/nginx.conf:ro"]
    assert interpolated(proxy["ports"]) == ["8080:8080"]
    directives = _directives(NGINX.read_text())

    def value(name: str, block: str = "http") -> str:
        [found] = [
            args for blocks, key, args in directives if key == name and blocks[-1:] == (block,)
        ]
        return found

    upstream = [args for blocks, key, args in directives if blocks[-1:] == ("upstream qwen3_tts",)]
    assert [args.split()[0] for args in upstream if args.startswith("qwen3-tts")] == [
        f"{name}:8000" for name in REPLICAS
    ]
    assert value("client_max_body_size") == "21m"  # MAX_UPLOAD_BYTES + the form fields
    assert value("client_header_timeout") == "15s"  # HEADER_TIMEOUT_S
    assert value("client_body_timeout") == "120s"  # BODY_TIMEOUT_S
    assert value("large_client_header_buffers") == "4 16k"  # MAX_HEADER_BYTES
    assert value("proxy_read_timeout", "server") == "600s"  # JOB_TIMEOUT_S
    assert value("proxy_buffer_size", "server") == "16k"  # response heads of 8 KB and more
    for location in ("location = /tts", "location = /v1/audio/speech"):
        assert value("proxy_buffering", location) == "off"
    realtime = "location = /v1/audio/speech/stream"
    assert value("proxy_buffering", realtime) == "off"
    assert value("proxy_read_timeout", realtime) == "1800s"  # REALTIME_MAX_SESSION_S
    headers = [args for blocks, key, args in directives if key == "proxy_set_header"]
    assert "Upgrade $http_upgrade" in headers and "Connection $connection_upgrade" in headers
    # nginx drops inherited proxy_set_header in a location that sets any: none may
    assert all(
        blocks[-1:] == ("server",) for blocks, key, _ in directives if key == "proxy_set_header"
    )


# -- the proxy's configuration, run by a real nginx in front of a real server ------------------
def _rendered_nginx(tmp_path: Path, upstream_port: int, listen_port: int) -> Path:
    """deploy/nginx.conf with the replicas' names pointing at a loopback server and nginx's
    files in tmp_path; everything else as shipped."""
    text = NGINX.read_text()
    for name in REPLICAS:
        assert f"server {name}:8000 " in text
        text = text.replace(f"server {name}:8000 ", f"server 127.0.0.1:{upstream_port} ")
    assert "listen 8080;" in text and "pid /tmp/nginx.pid;" in text
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{listen_port};")
    text = text.replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;")
    temp = " ".join(
        f"{kind}_temp_path {tmp_path}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {", f"http {{ {temp} access_log off;", 1)
    # Workers as this user (nginx's image has its own account): they write tmp_path's temp files.
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"user {getpass.getuser()};\n{text}")
    return conf


NGINX_BINARY = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.mark.needs(Path(NGINX_BINARY).exists(), "nginx is not installed (Debian package nginx)")
def test_the_client_works_through_the_shipped_proxy_config(
    live_server: Callable[..., LiveServer], engine: Engine, tmp_path: Path
) -> None:
    """The Python client through nginx with deploy/nginx.conf: speech, a stream, the realtime
    socket (the upgrade headers) and an upload past client_max_body_size (413 from nginx)."""
    with live_server(load_engine=lambda: engine) as server:
        server.wait_ready()
        listen = _free_port()
        conf = _rendered_nginx(tmp_path, server.port, listen)
        nginx = [NGINX_BINARY, "-p", str(tmp_path), "-c", str(conf)]
        errors = ["-e", str(tmp_path / "error.log")]
        check = subprocess.run([*nginx, "-t", "-e", "stderr"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        proxy = subprocess.Popen([*nginx, *errors, "-g", "daemon off;"])
        try:
            url = f"http://127.0.0.1:{listen}"
            wait_for_http(f"{url}/health", "nginx", timeout=30)
            with httpx.Client(base_url=url, timeout=60) as http:
                _, headers = new_user_key(http)
            _speak_through(url, headers["Authorization"][7:])
        finally:
            proxy.terminate()
            proxy.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _speak_through(url: str, key: str) -> None:
    with Client(url, key) as client:
        voice = client.clone_voice("v", reference_audio(), "Hello there, this is my voice.")
        assert client.tts("Through the proxy.", voice=voice).audio[:4] == b"RIFF"
        with client.stream("One sentence. Another one.", voice=voice) as audio:
            assert b"".join(audio)
        with pytest.raises(PayloadTooLargeError) as too_large:  # nginx's own 413
            client.clone_voice("big", b"\0" * (21 * 2**20 + 1), "Hi.")
        assert too_large.value.status == 413 and "nginx" in too_large.value.detail

    async def realtime() -> list[str]:
        async with AsyncClient(url, key) as client, client.realtime(voice="v") as session:
            await session.send_text("Hello through the proxy.")
            await session.close()
            return [item.type async for item in session if isinstance(item, RealtimeEvent)]

    assert asyncio.run(realtime())[-1] == "session.done"
