#!/usr/bin/env bash
# Set up (idempotent) and run every test. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The web demo's browser test drives Debian's chromium through Playwright (which never downloads a
# browser here): install it where it is missing and apt can (as root or with password-less sudo).
# Without a chromium that test skips and says why.
if [ -z "${SPADE_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  bash scripts/apt_install.sh tests/test_serve_browser.py chromium \
    || [ $? = 2 ] || echo "could not install chromium: the browser test will skip" >&2
fi
# The numeric tests once more as a CPU limited to AVX2 computes them (every bound must hold on
# other CPUs, with 10× margin: scripts/numeric_isa.py runs any other setting too); skipped when
# arguments select tests.
if [ $# -eq 0 ]; then
  .venv/bin/python scripts/numeric_isa.py --aten avx2 --onednn AVX2 --show 5
fi
exec .venv/bin/python -m pytest -q "$@"
