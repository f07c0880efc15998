#!/usr/bin/env bash
# Runs the Python wire-compatibility test (tests/python/test_cri_wire.py)
# against an already built daemon: $CRI_IMAGED_BIN, else
# $CARGO_TARGET_DIR/debug/cri-imaged, else target/debug/cri-imaged. It builds
# nothing; run `cargo build` (or `cargo test`) first.
#
# The virtualenv lives in $CRI_IMAGED_PYTHON_VENV (default
# target/python-wire-venv) and is reinstalled only when requirements.txt
# changes. Extra arguments go to pytest.
set -euo pipefail

repository_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repository_root"

requirements="tests/python/requirements.txt"
venv="${CRI_IMAGED_PYTHON_VENV:-${CARGO_TARGET_DIR:-$repository_root/target}/python-wire-venv}"
stamp="$venv/.requirements.sha256"
wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]]; then
    echo "== python venv: installing $requirements into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$wanted" > "$stamp"
fi

echo "== pytest tests/python"
# No bytecode or pytest cache in the source tree.
PYTHONDONTWRITEBYTECODE=1 exec "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    tests/python "$@"
