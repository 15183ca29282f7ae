#!/usr/bin/env bash
# Install aimsec with every framework into .venv, then run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "all"
.venv/bin/aimsec demo "$@"
