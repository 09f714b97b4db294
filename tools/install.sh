#!/usr/bin/env bash
# Create .venv and install polar4d's pinned stack in the order that works on a CPU-only machine
# (shared ENVIRONMENT.md): torch==2.13.0 first (the CPU wheel), torchvision==0.28.0, the pinned rest,
# py4DSTEM last without its stale numpy<2 / scikit-learn<1.5 pins. Idempotent: a second run only checks.
# Usage: bash tools/install.sh [--test]   (--test adds the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
$PIP install torch==2.13.0
$PIP install torchvision==0.28.0
$PIP install -r requirements.txt
if [ "${1:-}" = "--test" ]; then
  $PIP install -r requirements-test.txt
  # The browser test drives Debian's headless Chromium (Playwright's own browser download does not work
  # offline); install it where we may (CI runs as root), else say how.
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/dev/null \
        || echo "note: apt-get could not install chromium; tests/test_browser.py will be skipped (and fail under CI=true)"
    else
      echo "note: chromium is missing (sudo apt-get install -y chromium); tests/test_browser.py will be skipped (and fail under CI=true)"
    fi
  fi
fi
$PIP install --no-deps py4DSTEM==0.14.18
$PIP install --no-deps -e .
.venv/bin/python -c "import torch, abtem, py4DSTEM, polar4d_lib; print('polar4d installed: torch', torch.__version__, '| abtem', abtem.__version__, '| py4DSTEM', py4DSTEM.__version__)"
