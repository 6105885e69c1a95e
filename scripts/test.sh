#!/usr/bin/env bash
# Runs the test suite in the project's virtual environment (created on first use).
#   scripts/test.sh            fast suite (slow tests excluded)
#   scripts/test.sh --slow     everything, slow tests included
#   scripts/test.sh -k NAME    any other arguments go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STORYVIZ_EXTRAS="demo,dev" source "$ROOT/scripts/env.sh"
cd "$ROOT"
args=()
for a in "$@"; do
    if [ "$a" = "--slow" ]; then args+=(-m ""); else args+=("$a"); fi
done
ruff check src tests benchmarks scripts
ruff format --check src tests benchmarks scripts
exec python -m pytest "${args[@]}"
