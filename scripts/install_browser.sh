#!/usr/bin/env bash
# Installs Debian's chromium for the demo's browser test (tests/test_demo_browser.py) when it is missing.
# Does nothing when /usr/bin/chromium is present. Never uses `playwright install` (it downloads its own browser).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_browser.sh: /usr/bin/chromium is missing; run as root (or: apt-get install chromium)" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
echo "install_browser.sh: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
