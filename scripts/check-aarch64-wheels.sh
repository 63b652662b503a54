#!/usr/bin/env bash
# Check that every runtime dependency (pyproject.toml [project] dependencies, with their own
# dependencies) installs from wheels on a Raspberry Pi: aarch64 Linux, CPython 3.11. A Pi has no
# compiler time to spare, so a dependency that only ships an sdist for aarch64 is a bug.
#
#   scripts/check-aarch64-wheels.sh              # resolve and download into a temp dir, then delete it
#   scripts/check-aarch64-wheels.sh --keep DIR   # keep the wheels (e.g. to copy to an offline Pi)
#
# It asks the package index (pip download), so it needs network access to it. Exit 0: every
# package has a wheel for manylinux2014_aarch64 or manylinux_2_28_aarch64 (or a pure-Python
# wheel); otherwise pip's error names the package that has none.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=""
if [[ "${1:-}" == "--keep" ]]; then
    keep="${2:?--keep needs a directory}"
fi
python="${PYTHON:-.venv/bin/python}"
[[ -x "$python" ]] || python=python3

mapfile -t deps < <("$python" - <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    for dep in tomllib.load(f)["project"]["dependencies"]:
        if "python_version < '3.11'" not in dep:
            print(dep)
EOF
)

dest="${keep:-$(mktemp -d)}"
[[ -n "$keep" ]] || trap 'rm -rf "$dest"' EXIT
mkdir -p "$dest"
echo "checking ${#deps[@]} runtime dependencies for aarch64 / CPython 3.11 wheels: ${deps[*]}"
"$python" -m pip download --quiet --disable-pip-version-check --dest "$dest" \
    --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
    --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
    --platform manylinux_2_17_aarch64 --platform linux_aarch64 --platform any \
    "${deps[@]}" 2> >(grep -v "^WARNING: Location 'file://" >&2)
count=$(find "$dest" -name '*.whl' | wc -l)
native=$(find "$dest" -name '*aarch64*.whl' | wc -l)
echo "OK: ${count} wheels (${native} aarch64 builds, the rest pure Python) resolve for a Pi (aarch64, CPython 3.11)"
