# Qwen3-TTS Server image.
#
# GPU (default):  docker build -t qwen3-tts-server .
# CPU only:       docker build -t qwen3-tts-server:cpu \
#                   --build-arg BASE_IMAGE=python:3.11-slim-bookworm .
# flash-attn:     docker build --build-arg BASE_IMAGE=pytorch/pytorch:2.10.0-cuda12.8-cudnn9-devel \
#                   --build-arg INSTALL_FLASH_ATTN=1 .   (compiles; needs nvcc, i.e. a -devel base)
#
# The CUDA base image already carries torch (and a matching torchaudio). A base without torch gets
# the CPU wheel of TORCH_VERSION from TORCH_INDEX_URL, so the CPU image pulls no CUDA libraries.
ARG BASE_IMAGE=pytorch/pytorch:2.10.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG QWEN_TTS_VERSION=0.1.1
ARG QWEN_ASR_VERSION=0.0.6
# Optional extras of the project to install ("postgres" brings the PostgreSQL driver).
ARG EXTRAS=postgres
ARG INSTALL_FLASH_ATTN=0
ARG FLASH_ATTN_VERSION=2.8.3
ARG FLASH_ATTN_MAX_JOBS=4
# 1000 is the first account on most Linux desktops, so ./models and ./data made by hand fit.
ARG APP_UID=1000

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# 1. torch, unless the base image has it.
RUN python -c "import torch" 2>/dev/null \
    || pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# 2. qwen-tts and qwen-asr (the forced aligner) WITHOUT their declared dependencies (gradio, a CUDA
#    torchaudio, sox, onnxruntime, flask: none is used by the 12 Hz models or the aligner), then
#    the project's own pinned dependencies. Only pyproject.toml
#    is copied here, so editing the source does not reinstall the dependencies.
COPY pyproject.toml ./
RUN pip install --no-deps "qwen-tts==${QWEN_TTS_VERSION}" "qwen-asr==${QWEN_ASR_VERSION}" \
    && python -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = [e.strip() for e in sys.argv[1].split(",") if e.strip()]; \
print("\n".join(p["dependencies"] + [d for e in extras for d in p["optional-dependencies"][e]]))' \
        "${EXTRAS}" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# 3. Optional flash-attn (off by default; the server falls back to PyTorch SDPA).
RUN if [ "${INSTALL_FLASH_ATTN}" = 1 ]; then \
        pip install ninja==1.13.2 packaging==26.3 psutil==7.2.2 wheel==0.48.0 \
        && MAX_JOBS="${FLASH_ATTN_MAX_JOBS}" pip install --no-build-isolation "flash-attn==${FLASH_ATTN_VERSION}"; \
    fi

# 4. The project itself (dependencies are already in place).
COPY README.md ./
COPY src ./src
RUN pip install --no-deps . && rm -rf /app/src /app/build

# 5. An unprivileged account and the two volumes. -o: some base images already use uid 1000.
RUN groupadd -o -g "${APP_UID}" app \
    && useradd -l -o -u "${APP_UID}" -g app -m -d /home/app -s /bin/bash app \
    && mkdir -p /app/models /app/data \
    && chown app:app /app/models /app/data
COPY --chmod=0755 entrypoint.sh /usr/local/bin/entrypoint.sh

# Paths and listen address only: no secret has a default (ADMIN_TOKEN and HMAC_SECRET, when not
# given, are generated once by the server into DATA_DIR/secrets).
# NUMBA_CACHE_DIR: librosa's numba JIT cache must be writable by whatever uid runs the server.
# OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning, so a busy neighbour on
# the same cores does not stall every matrix multiply (README "Speed", bench/threads.py).
ENV MODELS_DIR=/app/models \
    DATA_DIR=/app/data \
    HOST=0.0.0.0 \
    PORT=8000 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    OMP_WAIT_POLICY=PASSIVE

VOLUME ["/app/models", "/app/data"]
EXPOSE 8000

# /health is liveness only; /ready tells whether models are loaded. The first start downloads
# several GB of models before the server listens, hence the long start period.
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=5 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/health', timeout=8)"]

# The image runs as `app` (uid APP_UID). compose.yml starts it as root instead, so that the
# entrypoint can hand Docker-created (root-owned, empty) bind-mount directories to `app`; the
# entrypoint then drops to `app` before running anything else.
USER ${APP_UID}:${APP_UID}
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["serve"]
