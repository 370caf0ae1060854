"""`qwen3-tts-server`: run the server, manage users on the host, fetch or build models, migrate.

Admin commands work directly on the database (no HTTP, no admin token needed on the host), with
the same services the API uses, so their rules cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qwen3_tts_server.config import Settings, resolve_secrets

if TYPE_CHECKING:  # imported when used: `--help` must not migrate a database
    from qwen3_tts_server.services.accounts import AccountService

app = typer.Typer(
    help="Qwen3-TTS Server: a self-hosted, multi-user text-to-speech REST API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
admin_app = typer.Typer(help="Manage users, invites and keys directly on the database.")
models_app = typer.Typer(help="Download real models, or build tiny offline ones.")
db_app = typer.Typer(help="Database schema management.")
app.add_typer(admin_app, name="admin", no_args_is_help=True)
app.add_typer(models_app, name="models", no_args_is_help=True)
app.add_typer(db_app, name="db", no_args_is_help=True)


def _settings(**overrides: Any) -> Settings:
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


def _fail(message: str, code: int = 1) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


# -- serve -----------------------------------------------------------------------------------------
def _run(settings: Settings) -> None:
    if settings.workers > 1:
        _fail(
            "WORKERS > 1 would load one copy of the models per worker process. Run one server "
            "process per GPU (WORKERS=1): requests are batched on the GPU inside it. To scale "
            "out, run more replicas against one PostgreSQL DATABASE_URL and a shared MEDIA_DIR.",
            code=2,
        )
    import uvicorn

    from qwen3_tts_server.app import create_app
    from qwen3_tts_server.engine.base import ModelsMissing
    from qwen3_tts_server.http_server import server_config
    from qwen3_tts_server.observability import configure_logging
    from qwen3_tts_server.wiring import aligner_loader, engine_loader

    configure_logging(settings.log_level, settings.log_json)
    try:
        loader = engine_loader(settings)
        load_aligner = aligner_loader(settings)
    except ModelsMissing as missing:
        _fail(str(missing), code=3)
    app = create_app(settings, loader, load_aligner)
    uvicorn.Server(server_config(app, settings)).run()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (env HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (env PORT).")] = None,
) -> None:
    """Start the server with the real models (downloaded to MODELS_DIR on first start)."""
    _run(_settings(host=host, port=port))


@app.command()
def demo(
    data_dir: Annotated[
        Path, typer.Option(help="Where the database, media and tiny models go.")
    ] = Path("demo-data"),
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port.")] = 8000,
) -> None:
    """Run fully offline on tiny random models (audio is noise; every API works)."""
    from qwen3_tts_server.wiring import tiny_model_settings

    settings = tiny_model_settings(_settings(data_dir=data_dir, host=host, port=port))
    settings = resolve_secrets(settings)
    base = f"http://{host}:{port}"
    token_file = settings.secrets_dir / "admin_token"
    typer.echo(
        f"""
Qwen3-TTS Server demo (tiny offline models: the audio is noise, the API is real)
  URL:          {base}   (API docs: {base}/docs, playground: {base}/playground)
  Admin token:  {token_file}
  Data:         {data_dir}

Try, in another terminal:
  export BASE={base} ADMIN_TOKEN=$(cat {token_file})
  curl -sS -X POST $BASE/admin/users -H "Authorization: Bearer $ADMIN_TOKEN"
  curl -sS -X POST "$BASE/admin/users/1/invites?expires_hours=24" \\
       -H "Authorization: Bearer $ADMIN_TOKEN"
  curl -sS -X POST $BASE/auth/exchange-invite -H "Content-Type: application/json" \\
       -d '{{"invite_code":"<the code>"}}'
Then follow README.md ("Voices", "Synthesis", "Preset speakers", "OpenAI-compatible",
"Realtime") with the API key it returns: the tiny CustomVoice model has the 9 preset speakers.
"""
    )
    _run(settings)


# -- admin -----------------------------------------------------------------------------------------
def _accounts() -> AccountService:
    """The account service, built by the same composition root as the server's."""
    from qwen3_tts_server.composition import build_context

    return build_context(_settings()).accounts


def _admin_call(action: Any) -> Any:
    from qwen3_tts_server.errors import ApiError

    try:
        return action()
    except ApiError as error:
        _fail(error.detail)


@admin_app.command("create-user")
def create_user(
    name: Annotated[str | None, typer.Option(help="A label for the user.")] = None,
    quota: Annotated[int | None, typer.Option(help="Lifetime token quota.", min=0)] = None,
) -> None:
    """Create a user and print its id."""
    accounts = _accounts()
    _print_json({"user_id": accounts.create_user(name, quota)})


@admin_app.command()
def invite(
    user_id: int,
    hours: Annotated[int, typer.Option(help="Hours until the code expires (1..720).")] = 24,
) -> None:
    """Create a single-use invite code for a user (they exchange it for an API key)."""
    accounts = _accounts()
    code = _admin_call(lambda: accounts.create_invite(user_id, hours))
    _print_json({"invite_code": code, "expires_hours": hours})


@admin_app.command("list-users")
def list_users_command() -> None:
    """List users with their usage totals."""
    _print_json(
        [
            {
                "user_id": user.user_id,
                "name": user.name,
                "is_active": user.is_active,
                "token_quota": user.token_quota,
                "created_at": user.created_at.isoformat(),
                "usage": user.usage.as_dict(),
            }
            for user in _accounts().list_users()
        ]
    )


@admin_app.command()
def disable(user_id: int) -> None:
    """Disable a user: all their keys answer 403 until enabled again."""
    accounts = _accounts()
    _admin_call(lambda: accounts.set_active(user_id, False))
    _print_json({"user_id": user_id, "status": "disabled"})


@admin_app.command()
def enable(user_id: int) -> None:
    """Enable a disabled user again."""
    accounts = _accounts()
    _admin_call(lambda: accounts.set_active(user_id, True))
    _print_json({"user_id": user_id, "status": "enabled"})


@admin_app.command("list-keys")
def list_keys(user_id: int) -> None:
    """List a user's API keys (prefixes only; keys themselves are never stored)."""
    accounts = _accounts()
    _print_json([vars(key) for key in _admin_call(lambda: accounts.list_keys(user_id))])


@admin_app.command("revoke-key")
def revoke_key(user_id: int, key_id: int) -> None:
    """Revoke one API key of a user."""
    accounts = _accounts()
    _admin_call(lambda: accounts.revoke_key(user_id, key_id))
    _print_json({"key_id": key_id, "status": "revoked"})


# -- models ----------------------------------------------------------------------------------------
@models_app.command("download")
def models_download() -> None:
    """Download the configured models (MODEL_*_REPO) into MODELS_DIR if missing."""
    from qwen3_tts_server.engine.base import ModelsMissing
    from qwen3_tts_server.wiring import resolve_aligner, resolve_paths

    settings = _settings()
    try:
        paths = resolve_paths(settings)
        aligner = resolve_aligner(settings)
    except ModelsMissing as missing:
        _fail(str(missing), code=3)
    found = {name: str(path) if path else None for name, path in vars(paths).items()}
    _print_json(found | {"aligner": str(aligner) if aligner else None})


@models_app.command("make-tiny")
def make_tiny(
    out_dir: Path,
    seed: Annotated[int, typer.Option(help="Seed for the random weights.")] = 0,
    dims: Annotated[
        str,
        typer.Option(
            help="Size preset: tiny (tests, demo), real-0.6b or real-1.7b (the published "
            "sizes, random weights, ~2.4 / ~4.5 GB: speed measurements)."
        ),
    ] = "tiny",
) -> None:
    """Build random models with the real architecture (offline tests, demo, benchmarks): the
    speech models and the forced aligner (DIR/aligner)."""
    from qwen3_tts_server.aligner.tiny import make_tiny_aligner
    from qwen3_tts_server.engine.model.dims import PRESETS
    from qwen3_tts_server.engine.model.tiny import make_tiny_models

    if dims not in PRESETS:
        _fail(f"--dims must be one of {', '.join(sorted(PRESETS))}, got {dims!r}", code=2)
    make_tiny_models(out_dir, seed=seed, dims=dims)
    make_tiny_aligner(out_dir / "aligner", seed=seed, dims=dims)
    _print_json({"models": sorted(str(p) for p in out_dir.iterdir() if p.is_dir())})


@models_app.command("list")
def models_list() -> None:
    """Show which configured models are present in MODELS_DIR."""
    from qwen3_tts_server.aligner.files import is_complete_aligner_dir
    from qwen3_tts_server.engine.model.model_files import is_complete_model_dir
    from qwen3_tts_server.wiring import model_dirs

    settings = _settings()
    _print_json(
        {
            name: {
                "repo": repo,
                "path": str(path),
                # The server's rule (configs and weights), so an interrupted download is absent.
                "present": (
                    is_complete_aligner_dir if name == "aligner" else is_complete_model_dir
                )(path),
            }
            for name, (repo, path) in model_dirs(settings).items()
        }
    )


# -- db --------------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (also done automatically at server start)."""
    from qwen3_tts_server.db.session import make_engine, upgrade

    settings = _settings()
    upgrade(make_engine(settings.resolved_database_url))
    typer.echo("database is up to date")


def main() -> None:
    app(prog_name="qwen3-tts-server")


if __name__ == "__main__":
    main()
