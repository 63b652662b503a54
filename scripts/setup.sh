#!/usr/bin/env bash
# Installs what the stack and its tests need on Debian / Raspberry Pi OS: system packages
# (only those missing) and a virtualenv in .venv with this project installed in it.
# Sourced by scripts/test.sh and scripts/demo.sh; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
if [ "${EDGE_SETUP_TEST_TOOLS:-0}" = 1 ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
  command -v ffprobe >/dev/null 2>&1 || need_apt+=(ffmpeg)      # DASH/HLS checks, a live MPEG-TS camera
  command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)     # throwaway CAs for the TLS tests
  command -v curl >/dev/null 2>&1 || need_apt+=(curl)           # h2c by HTTP/1.1 Upgrade (curl --http2)
  command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)     # the AWS SDK for JavaScript, hls.js, dynalite
fi
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "setup: installing system packages: ${need_apt[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
extras=""; [ "${EDGE_SETUP_DEMO:-0}" = 1 ] && extras="[demo]"      # boto3 for the demo's snippet
[ "${EDGE_SETUP_TEST_TOOLS:-0}" = 1 ] && extras="[test]"                  # (the test tools include boto3)
stamp=".venv/.installed${extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".${extras}"
  touch "$stamp"
fi

# Node clients and servers the tests drive (tests/js/package.json: AWS SDK for JS v3, hls.js, dynalite).
if [ "${EDGE_SETUP_TEST_TOOLS:-0}" = 1 ]; then
  js_stamp="tests/js/node_modules/.installed"
  if [ ! -f "$js_stamp" ] || [ tests/js/package-lock.json -nt "$js_stamp" ]; then
    echo "setup: installing Node test clients into tests/js/node_modules"
    (cd tests/js && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$js_stamp"
  fi
fi
