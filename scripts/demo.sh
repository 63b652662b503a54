#!/usr/bin/env bash
# Starts the stack on its embedded defaults. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
EDGE_SETUP_DEMO=1 bash scripts/setup.sh
exec .venv/bin/edge-agent demo "$@"
