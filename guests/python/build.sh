#!/usr/bin/env bash
# Builds the Python echo guest into a component:
#   guests/python/build.sh OUT.wasm
# or, with --per-client, the one instance per client (stdin to stdout):
#   guests/python/build.sh --per-client OUT.wasm
# Needs componentize-py (pip install componentize-py==0.25.1); the
# variable COMPONENTIZE_PY may name the program.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
world=echo-server app=app name=echo-python.wasm
if [ "${1:-}" = --per-client ]; then
    world=echo-stdio app=stdio_app name=echo-stdio-python.wasm
    shift
fi
out="$(realpath -m "${1:-$here/$name}")"
cd "$here"
"${COMPONENTIZE_PY:-componentize-py}" -d ../../wit -w "$world" componentize "$app" -o "$out"
