#!/usr/bin/env bash
# Install aimsec with every extra and the test tools into .venv, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "all,test"
.venv/bin/python -m pytest -q "$@"
