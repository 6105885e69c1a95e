#!/usr/bin/env bash
# Runs the storyviz command in the project's virtual environment (created on first use):
#   scripts/storyviz.sh generate --caption "..." --out story/
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
exec python -m storyviz "$@"
