#!/usr/bin/env bash
# Install aimsec with every framework into .venv and run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[all]"
.venv/bin/aimsec demo "$@"
