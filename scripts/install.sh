#!/usr/bin/env bash
# Create .venv and install aimsec into it with the extras given (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# The CPU build of torch first: a bare "torch" requirement would pull a multi-GB CUDA build
# from PyPI. PyTorch's CPU index holds 2.13.0+cpu, which ranks above PyPI's 2.13.0.
.venv/bin/pip install -q --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
.venv/bin/pip install -q -e ".[${1:-all}]"
