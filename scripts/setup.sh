#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv, torch pinned (installed first, so pip never
# pulls a multi-GB CUDA build as a dependency), then this package in editable mode with its test
# extras. Re-runs are instant unless pyproject.toml or this script changed.
#   SPADE_PYTHON       interpreter to create the venv with (default: python3; needs 3.11+)
#   SPADE_TORCH_SPEC   torch requirement (default: torch==2.13.0, the CPU build; for CUDA, e.g.
#                      "torch==2.13.0 --index-url <your CUDA wheel index>")
set -euo pipefail
cd "$(dirname "$0")/.."
python=${SPADE_PYTHON:-python3}
torch_spec=${SPADE_TORCH_SPEC:-torch==2.13.0}

"$python" - <<'PY' || { echo "spadegan needs Python 3.11 or newer ($python is older)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
[ -x .venv/bin/python ] || "$python" -m venv .venv

stamp=.venv/.spade-setup-stamp
want=$(cat pyproject.toml scripts/setup.sh src/spadegan/nn/csrc/*.cpp | .venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')-$torch_spec
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up .venv ($torch_spec, then spadegan in editable mode)..."
  # shellcheck disable=SC2086  # the spec may carry pip options
  .venv/bin/python -m pip install -q --disable-pip-version-check $torch_spec
  # The distribution was called "spade" before; a .venv made then holds it under that name.
  .venv/bin/python -m pip uninstall -q -y spade 2>/dev/null || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
  # The compiled kernel of the fast SPADE path (optional: without a compiler the PyTorch path runs).
  .venv/bin/python -m spadegan.nn.kernels || true
  # tcmalloc, which the spadegan command starts with where it is installed (spadegan.memory:
  # training keeps its peak below the reference path's with it); without it, glibc's malloc is used.
  if ! .venv/bin/python -c 'import sys, spadegan.memory as m; sys.exit(m.tcmalloc_library() is None)'; then
    status=0
    bash scripts/apt_install.sh "the spadegan command" libtcmalloc-minimal4 || status=$?
    case $status in
      1) echo "could not install libtcmalloc-minimal4: spadegan runs with glibc's malloc" >&2 ;;
      2) echo "spadegan runs faster in less memory with tcmalloc: apt-get install libtcmalloc-minimal4" >&2 ;;
    esac
  fi
  echo "$want" > "$stamp"
fi
