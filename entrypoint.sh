#!/usr/bin/env bash
# Container entry point for Qwen3-TTS Server.
#
#   entrypoint.sh [serve] [serve options...]  download missing models, migrate the DB, serve
#   entrypoint.sh COMMAND [ARGS...]           run COMMAND instead (`bash`, `qwen3-tts-server ...`)
#
# Environment read here (everything else is read by the server itself):
#   SKIP_MODEL_DOWNLOAD=1 or ALLOW_DOWNLOAD=0   do not download missing models before serving
#   MODELS_DIR, DATA_DIR                         default /app/models, /app/data
#   QTTS_USER   account to run as when started as root (default "app"; empty = stay root)
#   QTTS_CLI    the server's command (default qwen3-tts-server; tests substitute a fake)
set -euo pipefail

cli="${QTTS_CLI:-qwen3-tts-server}"
run_as="${QTTS_USER-app}"
models_dir="${MODELS_DIR:-/app/models}"
data_dir="${DATA_DIR:-/app/data}"

log() { printf '[entrypoint] %s\n' "$*" >&2; }
# The same spellings the server's settings accept for booleans.
is_true() { case "${1,,}" in 1 | t | true | y | yes | on) return 0 ;; *) return 1 ;; esac }
is_false() { case "${1,,}" in 0 | f | false | n | no | off) return 0 ;; *) return 1 ;; esac }

# Prefix that runs a command as the unprivileged account. Empty when we are not root.
as_app=()
if [[ "$(id -u)" == 0 && -n "$run_as" ]]; then
    # Started as root (compose does this): Docker creates missing bind-mount sources such as
    # ./models and ./data as root-owned directories, which the unprivileged account could not
    # write. Hand over such directories while they are still empty, then drop privileges for
    # every command below. Non-empty directories are never re-owned.
    if ! uid="$(id -u "$run_as" 2>/dev/null)"; then
        log "error: QTTS_USER=$run_as is not an account in this image"
        exit 1
    fi
    gid="$(id -g "$run_as")"
    home="$(getent passwd "$run_as" | cut -d: -f6)"
    as_app=(setpriv "--reuid=$uid" "--regid=$gid" --init-groups env "HOME=${home:-/tmp}")
    for dir in "$models_dir" "$data_dir"; do
        mkdir -p "$dir"
        if ! "${as_app[@]}" test -w "$dir"; then
            if [[ -z "$(ls -A "$dir")" ]]; then
                chown "$uid:$gid" "$dir"
                log "gave the empty directory $dir to $run_as (uid $uid)"
            else
                log "warning: $dir is not writable by $run_as (uid $uid) and is not empty; left as it is"
            fi
        fi
    done
fi

if [[ $# -gt 0 && "$1" != -* ]]; then
    if [[ "$1" == serve ]]; then
        shift
    else
        exec "${as_app[@]}" "$@"
    fi
fi

if [[ ${#as_app[@]} -eq 0 ]]; then
    mkdir -p "$data_dir" 2>/dev/null || true
    if [[ ! -w "$data_dir" ]]; then
        log "error: DATA_DIR $data_dir is not writable by uid $(id -u)."
        log "Fix the owner of the mounted directory (e.g. 'sudo chown -R $(id -u):$(id -g) ./data')"
        log "or start the container as root so that it can hand over empty directories itself."
        exit 1
    fi
fi

if is_true "${SKIP_MODEL_DOWNLOAD:-0}" || is_false "${ALLOW_DOWNLOAD:-1}"; then
    log "model download skipped (SKIP_MODEL_DOWNLOAD=${SKIP_MODEL_DOWNLOAD:-} ALLOW_DOWNLOAD=${ALLOW_DOWNLOAD:-})"
else
    log "downloading missing models into $models_dir"
    "${as_app[@]}" "$cli" models download || {
        rc=$?
        log "error: model download failed (exit $rc); the server was not started."
        log "Check the network and HF_TOKEN, that $models_dir is writable, or put the models there"
        log "yourself and set SKIP_MODEL_DOWNLOAD=1."
        exit "$rc"
    }
fi

log "applying database migrations"
"${as_app[@]}" "$cli" db upgrade || {
    rc=$?
    log "error: database migration failed (exit $rc); the server was not started."
    exit "$rc"
}

log "starting the server"
exec "${as_app[@]}" "$cli" serve "$@"
