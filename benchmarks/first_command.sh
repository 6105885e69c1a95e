#!/usr/bin/env bash
# The README's first command on a fresh machine, timed end to end: a fresh clone of this repository's HEAD in a
# temporary folder, no virtual environment, then the command exactly as the README gives it (it creates .venv,
# installs storyviz and writes a story strip from the bundled default model).
#   bash benchmarks/first_command.sh            # prints the seconds and the files written
# Pip's cache and the local wheel folder are what a fresh machine of this kind has; nothing else is reused.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMMAND="$(grep -m1 '# main job' "$ROOT/README.md" | sed 's/ *# main job.*//')"
[ -n "$COMMAND" ] || { echo "no line marked '# main job' in README.md" >&2; exit 2; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
git clone --quiet "$ROOT" "$TMP/storyviz"
cd "$TMP/storyviz"
echo "command: $COMMAND"
touch "$TMP/started"
start=$(date +%s.%N)
bash -c "$COMMAND"
end=$(date +%s.%N)
echo "written: $(find . \( -path ./.venv -o -path ./.git -o -name '*.egg-info' \) -prune -o -newer "$TMP/started" -type f -print | sort | tr '\n' ' ')"
python3 -c "print(f'first command: {$end - $start:.1f} s')"
