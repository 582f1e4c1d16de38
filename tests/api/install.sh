#!/usr/bin/env bash
# Installs the pinned schemathesis used by tests/integration/api.rs (it checks the operations API
# of the real daemon against openapi/chatwatch.v1.json) into a venv under target/. Idempotent:
# fast when installed. Prints nothing on success; the CLI is target/api-venv/bin/schemathesis.
set -euo pipefail
VERSION=4.32.5
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/api-venv"
bin="$venv/bin/schemathesis"
stamp="$VERSION $(sha256sum "$root/tests/api/constraints.txt" | cut -c1-16)"
if [ -x "$bin" ] && [ "$(cat "$venv/.version" 2>/dev/null)" = "$stamp" ]; then
    exit 0
fi
mkdir -p "$root/target"
rm -rf "$venv"
python3 -m venv "$venv"
# constraints.txt pins every dependency too (pip freeze of a working install), so a new release
# of one of them cannot change what the test runs.
"$venv/bin/pip" install --quiet --disable-pip-version-check -c "$root/tests/api/constraints.txt" "schemathesis==$VERSION"
"$bin" --version >/dev/null
echo "$stamp" > "$venv/.version"
