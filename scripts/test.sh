#!/usr/bin/env bash
# Runs the whole test suite: installs what it needs (system packages, .venv), then pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k kds -x
set -euo pipefail
cd "$(dirname "$0")/.."
EDGE_SETUP_TEST_TOOLS=1 bash scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
