# One entry point for people and CI. `make test` builds .venv from nothing when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR ?= demo-data
DEMO_PORT ?= 8000

.PHONY: install browser test lint typecheck unit serve demo clean

# Install order matters on CPU machines: torch first (the CPU build lies on disk; anything
# else pulls gigabytes of CUDA), then qwen-tts without its declared dependencies (gradio, a CUDA
# torchaudio, sox, onnxruntime: none is used by the 12 Hz models), qwen-asr (the forced aligner)
# the same way (gradio, flask, sox, a pinned transformers: none needed to align), then the
# project, which pins what both really use.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --no-deps qwen-tts==0.1.1
	$(BIN)/pip install --quiet --no-deps qwen-asr==0.0.6
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e ./clients/python
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench clients
	$(BIN)/ruff format --check src tests bench clients

typecheck: $(STAMP)
	$(BIN)/mypy

# The browser test drives Debian's chromium (Playwright is told never to fetch a browser of its
# own). Installed here when missing and we are root with apt, as on CI; elsewhere the test skips,
# except under CI=true, where it fails.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium could not be installed; the browser test fails under CI=true, skips elsewhere"

unit: $(STAMP) browser
	$(BIN)/pytest -q tests

test: lint typecheck unit

serve: $(STAMP)
	$(BIN)/qwen3-tts-server serve

demo: $(STAMP)
	$(BIN)/qwen3-tts-server demo --data-dir $(DEMO_DIR) --port $(DEMO_PORT)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
