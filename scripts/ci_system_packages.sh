#!/usr/bin/env bash
# System packages the test suite needs beyond Python: Debian's Chromium for the browser test of the demo.
# Does nothing when they are already there; skipped when not root (the browser test then skips with a reason).
set -euo pipefail
if [ -x /usr/bin/chromium ] || [ "$(id -u)" != 0 ]; then exit 0; fi
if ! command -v apt-get >/dev/null; then exit 0; fi
echo "installing Debian chromium for the browser test" >&2
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
