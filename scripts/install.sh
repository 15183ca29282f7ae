#!/usr/bin/env bash
# Create .venv and install aimsec into it with the extras given (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first, pinned. On Linux, PyPI's torch is the multi-GB CUDA build: on a machine
# without a GPU set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu (PyTorch's CPU
# index) to get the CPU build instead; unset, pip's configured index decides.
.venv/bin/pip install -q ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} "torch==2.13.0"
.venv/bin/pip install -q -e ".[${1:-all}]"
