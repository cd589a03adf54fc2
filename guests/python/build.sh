#!/usr/bin/env bash
# Builds the Python echo guest into a component:
#   guests/python/build.sh OUT.wasm
# Needs componentize-py (pip install componentize-py==0.25.1); the
# variable COMPONENTIZE_PY may name the program.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/echo-python.wasm}")"
cd "$here"
"${COMPONENTIZE_PY:-componentize-py}" -d ../../wit -w echo-server componentize app -o "$out"
