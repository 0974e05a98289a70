#!/usr/bin/env bash
# Builds the deepcomp wheel (abi3) into a fresh venv and runs the pytest suite.
# Usage: python/ci.sh   (needs python3 >= 3.8 and a Rust toolchain; fetches maturin, numpy, pytest)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${DEEPCOMP_PY_VENV:-$here/target/venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "maturin>=1.5,<2" numpy pytest
cd "$here"
"$venv/bin/maturin" build --release --out "$here/target/wheels" -q
"$venv/bin/pip" install -q --force-reinstall --no-deps "$here"/target/wheels/deepcomp-*.whl
cd "$here/tests"
"$venv/bin/python" -m pytest -q
