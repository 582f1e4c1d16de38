#!/usr/bin/env bash
# Installs the Debian packages the test command needs beyond Rust and Node.js, when missing:
#   prometheus         promtool, for `promtool check rules` / `promtool test rules` (tests/ship.rs)
#   systemd            systemd-analyze, for the unit checks (tests/service.rs)
#   systemd-container  systemd-nspawn, and debootstrap: the real-systemd test (tests/systemd/run.sh)
# Needs root and apt-get; elsewhere it says what is missing and leaves the tests to skip (or,
# with CI=true, to fail). The prometheus server that comes with promtool is not started
# (policy-rc.d for the length of the install).
set -euo pipefail

want=()
command -v promtool >/dev/null || want+=(prometheus)
command -v systemd-analyze >/dev/null || want+=(systemd)
command -v systemd-nspawn >/dev/null || want+=(systemd-container)
command -v debootstrap >/dev/null || want+=(debootstrap)
[ ${#want[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "ci-deps: not installing ${want[*]} (needs root and apt-get); the tests needing them skip" >&2
    exit 0
fi
echo "ci-deps: installing ${want[*]}" >&2
made_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
fi
trap '[ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${want[@]}" >/dev/null
