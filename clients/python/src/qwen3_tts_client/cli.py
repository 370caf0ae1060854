"""`qwen3-tts`: the client from a shell. The server and key come from --url / --api-key, else
QWEN3_TTS_URL / QWEN3_TTS_API_KEY. Exit codes (EXIT_CODES) tell scripts what went wrong."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, BinaryIO

from qwen3_tts_client.client import Client
from qwen3_tts_client.connection import KEY_ENV, URL_ENV
from qwen3_tts_client.errors import (
    ApiError,
    AuthenticationError,
    ConflictError,
    NetworkError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QuotaExceededError,
    Qwen3TTSError,
    StreamInterrupted,
    UnprocessableEntityError,
)
from qwen3_tts_client.models import Voice

OK = 0
FAILED = 1  # anything unexpected: a bug, or not a Qwen3-TTS server
USAGE = 2  # bad arguments, a missing file, no audio player
AUTH = 3  # 401 / 403: the key is missing, wrong or revoked, the account disabled or at a limit
NOT_FOUND = 4  # 404, or no voice of that name
QUOTA = 5  # 402 / 413: token quota or storage used up
REFUSED = 6  # 400 / 409 / 422: the request is wrong; the message says what to fix
UNAVAILABLE = 7  # 429 / 5xx: busy or down; try again later (Retry-After is printed)
NETWORK = 8  # the server cannot be reached, timed out, or cut a stream short

#: Exit code by error class, most specific first (documented in the client's README).
EXIT_CODES: list[tuple[type[Qwen3TTSError], int]] = [
    (AuthenticationError, AUTH),
    (PermissionDeniedError, AUTH),
    (NotFoundError, NOT_FOUND),
    (QuotaExceededError, QUOTA),
    (PayloadTooLargeError, QUOTA),
    (UnprocessableEntityError, REFUSED),
    (ConflictError, REFUSED),
    (NetworkError, NETWORK),
    (StreamInterrupted, NETWORK),
]

#: Players tried by --play, in order: (command, the formats it plays, arguments before the file).
PLAYERS: list[tuple[str, frozenset[str], list[str]]] = [
    ("ffplay", frozenset({"wav", "mp3", "ogg", "flac", "opus", "aac"}), ["-nodisp", "-autoexit"]),
    ("paplay", frozenset({"wav", "ogg", "flac"}), []),
    ("aplay", frozenset({"wav"}), ["-q"]),
    ("afplay", frozenset({"wav", "mp3", "flac", "aac"}), []),
]


class UsageProblem(Exception):
    """Exit 2 with this message: the command line asked for something impossible."""


def exit_code(error: Qwen3TTSError) -> int:
    for kind, code in EXIT_CODES:
        if isinstance(error, kind):
            return code
    if isinstance(error, ApiError):
        return UNAVAILABLE if error.status == 429 or error.status >= 500 else REFUSED
    return FAILED


def _say_error(error: Qwen3TTSError) -> None:
    message = f"qwen3-tts: {error}"
    if isinstance(error, ApiError) and error.retry_after is not None:
        message += f" (retry after {error.retry_after:g} s)"
    print(message, file=sys.stderr)


# -- naming a voice -------------------------------------------------------------------------------
def resolve_voice(client: Client, name: str) -> Voice:
    """One of your voices by name (exact, then ignoring case) or by id."""
    voices = client.voices()
    for matches in (
        [v for v in voices if v.name == name],
        [v for v in voices if v.name.casefold() == name.casefold()],
        [v for v in voices if name.isdigit() and v.voice_id == int(name)],
    ):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            ids = ", ".join(str(v.voice_id) for v in matches)
            raise UsageProblem(f"several voices are named {name!r} (ids {ids}): pass the id")
    known = ", ".join(sorted(v.name for v in voices)) or "none yet (clone or design one)"
    raise NotFoundError(404, f"you have no voice {name!r}; your voices: {known}")


def _speech_options(
    client: Client, args: argparse.Namespace
) -> tuple[Voice | None, dict[str, Any]]:
    if (args.voice is None) == (args.speaker is None):
        raise UsageProblem("give exactly one of --voice (one of your voices) or --speaker")
    voice = resolve_voice(client, args.voice) if args.voice is not None else None
    options = {
        "speaker": args.speaker,
        "instruct": args.instruct,
        "language": args.language,
        "seed": args.seed,
        "temperature": args.temperature,
        "store": args.store,
    }
    return voice, {key: value for key, value in options.items() if value is not None}


# -- audio out ------------------------------------------------------------------------------------
def _player(fmt: str) -> list[str]:
    for command, formats, arguments in PLAYERS:
        path = shutil.which(command)
        if path and fmt in formats:
            return [path, *arguments]
    names = ", ".join(command for command, formats, _ in PLAYERS if fmt in formats)
    raise UsageProblem(f"no player for {fmt} found ({names}); write a file with -o instead")


def _play(player: list[str], path: Path) -> None:
    subprocess.run([*player, str(path)], check=True)  # noqa: S603 (a player found on PATH)


def _open_output(target: str) -> AbstractContextManager[BinaryIO]:
    """The file to write, or standard output (left open) for `-`."""
    return nullcontext(sys.stdout.buffer) if target == "-" else Path(target).open("wb")


def _text(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


# -- commands -------------------------------------------------------------------------------------
def _write_speech(client: Client, args: argparse.Namespace, fmt: str, target: str) -> None:
    """The file is opened only once the server has accepted the call, and a stream cut short
    is removed: a refused or failed call leaves no file behind."""
    voice, options = _speech_options(client, args)
    text = _text(args.text)
    if not args.stream:
        speech = client.tts(text, voice, format=fmt, **options)
        with _open_output(target) as out:
            out.write(speech.audio)
        print(
            f"generation {speech.generation_id}: {speech.tokens_used} tokens, "
            f"{speech.latency_ms} ms, finished by {speech.finish_reason}",
            file=sys.stderr,
        )
        return
    with client.stream(text, voice, format=fmt, **options) as audio:
        try:
            with _open_output(target) as out:
                for piece in audio:
                    out.write(piece)
                    out.flush()
        except BaseException:
            if target != "-":
                Path(target).unlink(missing_ok=True)
            raise
    info = audio.info
    print(f"generation {info.generation_id}: {info.tokens_used} tokens", file=sys.stderr)


def cmd_say(client: Client, args: argparse.Namespace) -> None:
    if args.output is None and not args.play:
        raise UsageProblem("say needs -o FILE (or -o - for standard output), --play, or both")
    if args.play and args.output == "-":
        raise UsageProblem("--play cannot play standard output; give -o a file, or leave it out")
    fmt = args.format or ("pcm" if args.stream else "wav")
    player = _player(fmt) if args.play else None  # refused before paying for audio
    if args.output is not None:
        _write_speech(client, args, fmt, args.output)
        if player is not None:
            _play(player, Path(args.output))
        return
    assert player is not None
    with tempfile.TemporaryDirectory() as folder:  # --play alone: a file for the player
        target = Path(folder) / f"speech.{fmt}"
        _write_speech(client, args, fmt, str(target))
        _play(player, target)


def cmd_batch(client: Client, args: argparse.Namespace) -> None:
    """One text per line of FILE; calls of --per-call texts; progress on standard error."""
    lines = Path(args.file).read_text(encoding="utf-8") if args.file != "-" else sys.stdin.read()
    texts = [line.strip() for line in lines.splitlines() if line.strip()]
    if not texts:
        raise UsageProblem(f"{args.file} has no text (one text per line)")
    if args.per_call < 1:
        raise UsageProblem("--per-call must be at least 1")
    fmt = args.format or "wav"
    voice, options = _speech_options(client, args)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    width = len(str(len(texts)))
    done = tokens = 0
    for start in range(0, len(texts), args.per_call):
        chunk = texts[start : start + args.per_call]
        if len(chunk) == 1:  # a batch needs two texts at least (MIN_BATCH_SIZE)
            speech = client.tts(chunk[0], voice, format=fmt, **options)
            audio, tokens = [speech.audio], tokens + speech.tokens_used
        else:
            batch = client.batch(chunk, voice, format=fmt, **options)
            audio, tokens = [item.audio for item in batch.items], tokens + batch.tokens_used
        for offset, data in enumerate(audio):
            (out / f"{start + offset + 1:0{width}d}.{fmt}").write_bytes(data)
        done += len(chunk)
        print(
            f"[{done}/{len(texts)}] {100 * done // len(texts)}% ({tokens} tokens)", file=sys.stderr
        )
    print(f"{len(texts)} files in {out}")


def _print_rows(rows: Sequence[Any], columns: Sequence[str], as_json: bool) -> None:
    dicts = [dataclasses.asdict(row) for row in rows]
    if as_json:
        print(json.dumps(dicts, default=str, indent=2))
        return
    table = [[str(row[column]) for column in columns] for row in dicts]
    widths = [
        max([len(column)] + [len(cells[i]) for cells in table]) for i, column in enumerate(columns)
    ]
    for cells in [list(columns), *table]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        )


def cmd_voices(client: Client, args: argparse.Namespace) -> None:
    _print_rows(
        client.voices(), ["voice_id", "name", "language", "use_count", "created_at"], args.json
    )


def cmd_speakers(client: Client, args: argparse.Namespace) -> None:
    _print_rows(client.speakers(), ["name", "native_language", "description"], args.json)


def cmd_clone(client: Client, args: argparse.Namespace) -> None:
    path = Path(args.audio)
    if not path.is_file():
        raise UsageProblem(f"no such file: {path}")
    created = client.clone_voice(args.name, path, args.transcript, args.language)
    print(created.voice_id)
    print(f"voice {created.voice_id} ({args.name}): {created.tokens_used} tokens", file=sys.stderr)


def cmd_design(client: Client, args: argparse.Namespace) -> None:
    created = client.design_voice(args.name, args.description, args.language)
    print(created.voice_id)
    print(f"voice {created.voice_id} ({args.name}): {created.tokens_used} tokens", file=sys.stderr)


def cmd_delete(client: Client, args: argparse.Namespace) -> None:
    voice = resolve_voice(client, args.voice)
    client.delete_voice(voice)
    print(f"deleted voice {voice.voice_id} ({voice.name})", file=sys.stderr)


def cmd_usage(client: Client, args: argparse.Namespace) -> None:
    usage = dataclasses.asdict(client.usage())
    if args.json:
        print(json.dumps(usage, indent=2))
        return
    for name, value in usage.items():
        print(f"{name:<20} {value}")


# -- the parser -----------------------------------------------------------------------------------
def _speech_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--voice", help="one of your voices, by name or id")
    parser.add_argument("--speaker", help="a preset speaker instead (see `qwen3-tts speakers`)")
    parser.add_argument("--instruct", help="how to speak (preset speakers, designed voices)")
    parser.add_argument("--language", help="auto (default), english, chinese, ...")
    parser.add_argument("--format", help="wav (default), mp3, ogg, flac, opus, aac, pcm")
    parser.add_argument("--seed", type=int, help="the same seed gives the same audio")
    parser.add_argument("--temperature", type=float, help="0.01 to 2 (server default 1.0)")
    parser.add_argument("--store", action="store_true", default=None, help="keep it on the server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwen3-tts",
        description="Speak, make voices and read usage on a Qwen3-TTS server.",
        epilog="Exit codes: 0 ok, 1 unexpected, 2 usage, 3 key/permission, 4 not found, "
        "5 quota/storage, 6 request refused, 7 busy/unavailable, 8 network.",
    )
    parser.add_argument("--url", help=f"server URL (default ${URL_ENV}, else localhost:8000)")
    parser.add_argument("--api-key", help=f"API key (default ${KEY_ENV}; prefer the variable)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    parser.add_argument("--retries", type=int, default=2, help="retries when the server asks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    say = commands.add_parser("say", help="speak a text")
    say.add_argument("text", help="the text, or - to read it from standard input")
    say.add_argument("-o", "--output", help="file to write (- for standard output)")
    say.add_argument("--play", action="store_true", help="play it (ffplay, paplay, aplay, afplay)")
    say.add_argument("--stream", action="store_true", help="write audio as it is made (pcm, wav)")
    _speech_arguments(say)
    say.set_defaults(run=cmd_say)

    batch = commands.add_parser("batch", help="speak one text per line of a file, with progress")
    batch.add_argument("file", help="a text file, one text per line (- for standard input)")
    batch.add_argument("-o", "--output", default=".", help="folder for 1.wav, 2.wav, ...")
    batch.add_argument("--per-call", type=int, default=10, help="texts per /batchtts call")
    _speech_arguments(batch)
    batch.set_defaults(run=cmd_batch)

    voices = commands.add_parser("voices", help="list your voices")
    voices.add_argument("--json", action="store_true")
    voices.set_defaults(run=cmd_voices)

    speakers = commands.add_parser("speakers", help="list the preset speakers")
    speakers.add_argument("--json", action="store_true")
    speakers.set_defaults(run=cmd_speakers)

    clone = commands.add_parser("clone", help="clone a voice from a recording; prints its id")
    clone.add_argument("name")
    clone.add_argument("audio", help="WAV, MP3, OGG or FLAC, 1 to 60 s")
    clone.add_argument("--transcript", required=True, help="exactly what the recording says")
    clone.add_argument("--language")
    clone.set_defaults(run=cmd_clone)

    design = commands.add_parser("design", help="design a voice from a description; prints its id")
    design.add_argument("name")
    design.add_argument("description")
    design.add_argument("--language")
    design.set_defaults(run=cmd_design)

    delete = commands.add_parser("delete", help="delete one of your voices (name or id)")
    delete.add_argument("voice")
    delete.set_defaults(run=cmd_delete)

    usage = commands.add_parser("usage", help="your usage totals")
    usage.add_argument("--json", action="store_true")
    usage.set_defaults(run=cmd_usage)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[Client, argparse.Namespace], None] = args.run
    try:
        with Client(
            args.url, args.api_key, timeout=args.timeout, max_retries=args.retries
        ) as client:
            run(client, args)
    except UsageProblem as problem:
        print(f"qwen3-tts: {problem}", file=sys.stderr)
        return USAGE
    except Qwen3TTSError as error:
        _say_error(error)
        return exit_code(error)
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"qwen3-tts: {error}", file=sys.stderr)
        return USAGE if isinstance(error, OSError) else FAILED
    return OK


if __name__ == "__main__":
    sys.exit(main())
