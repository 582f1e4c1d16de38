#!/usr/bin/env bash
# The real-systemd test: boots Debian 12 (systemd 252) in systemd-nspawn, installs the .deb that
# `cargo deb` builds, runs the GWS simulator inside, and checks the service as an operator meets
# it: install, start (Type=notify), STATUS=, /readyz, journald fields, the file sink and its mode,
# a credential from LoadCredential=, `systemctl reload` good and bad, no SIGSYS under
# SystemCallErrorNumber=kill, the watchdog on a SIGSTOPped daemon, clean stop, upgrade, purge.
#
# Needs root and systemd-nspawn/debootstrap (installed with apt when missing). Where it cannot
# run it prints "systemd: SKIPPED (<reason>)" and exits 0, except with CI=true: then a skip fails.
# The container root (debootstrap --variant=minbase with systemd and dbus, about 50 s to build)
# is cached in $CHATWATCH_SYSTEMD_CACHE (default /var/tmp/chatwatch-systemd) and copied per run.
# The package's binary comes from `cargo deb` (the dev profile that `cargo test` built, in
# $CARGO_TARGET_DIR, default target/; CHATWATCH_DEB_PROFILE=release for a release build);
# CHATWATCH_DEB=<file> tests a given .deb instead.
#
# Prints one line per check and a summary "systemd: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."

CACHE=${CHATWATCH_SYSTEMD_CACHE:-/var/tmp/chatwatch-systemd}
ROOT=$CACHE/bookworm-root
RUN=$CACHE/run
MIRROR=${CHATWATCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
START=$(date +%s)

skip() {
    if [ "${CI:-}" = "true" ]; then
        echo "systemd: FAILED: the test cannot run here ($1), and CI=true does not allow a skip"
        exit 1
    fi
    echo "systemd: SKIPPED ($1)"
    exit 0
}

[ "$(uname -s)" = Linux ] || skip "not Linux"
[ "$(id -u)" = 0 ] || skip "needs root (systemd-nspawn, debootstrap)"
if ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null; then
    command -v apt-get >/dev/null || skip "no systemd-nspawn/debootstrap and no apt-get to install them"
    echo "systemd: installing systemd-container and debootstrap"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd-container debootstrap; } >/dev/null ||
        skip "cannot install systemd-container and debootstrap with apt-get"
fi

# --- the package ----------------------------------------------------------------------------
if [ -n "${CHATWATCH_DEB:-}" ]; then
    DEB=$CHATWATCH_DEB
else
    if ! command -v cargo-deb >/dev/null; then
        echo "systemd: installing cargo-deb (crates.io)"
        cargo install --locked cargo-deb --version 3.8.0 -q || skip "cannot install cargo-deb"
    fi
    t0=$(date +%s)
    # The dev profile by default: `cargo test` has just built it, and a release build costs
    # minutes on 2 cores; what this test checks (the package, the unit, systemd) does not
    # depend on optimisation. CHATWATCH_DEB_PROFILE=release packages what operators build.
    DEB=$(cargo deb --locked --profile "${CHATWATCH_DEB_PROFILE:-dev}" --strip --fast \
        2>"$CACHE.cargo-deb.log" | tail -n 1) || {
        mkdir -p "$CACHE"
        cat "$CACHE.cargo-deb.log" >&2
        echo "systemd: 0 passed, 1 failed (cargo deb)"
        exit 1
    }
    echo "systemd: cargo deb: $(($(date +%s) - t0)) s ($DEB)"
fi
[ -f "$DEB" ] || { echo "systemd: 0 passed, 1 failed (no package at '$DEB')"; exit 1; }

# --- the container root (cached) -----------------------------------------------------------
mkdir -p "$CACHE"
if [ ! -e "$ROOT/.chatwatch-root-ok" ]; then
    t0=$(date +%s)
    rm -rf "$ROOT.tmp"
    debootstrap --variant=minbase --include=systemd,dbus,ca-certificates bookworm "$ROOT.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
        skip "debootstrap failed (see $CACHE/debootstrap.log)"
    echo chatwatch-test >"$ROOT.tmp/etc/hostname"
    touch "$ROOT.tmp/.chatwatch-root-ok"
    rm -rf "$ROOT" && mv "$ROOT.tmp" "$ROOT"
    echo "systemd: built the container root in $(($(date +%s) - t0)) s ($ROOT)"
fi

# The package's dependencies beyond minbase (the container has no network at dpkg -i time).
for pkg in ca-certificates; do
    if ! chroot "$ROOT" dpkg -s "$pkg" >/dev/null 2>&1; then
        chroot "$ROOT" apt-get install -y -q "$pkg" >>"$CACHE/debootstrap.log" 2>&1 ||
            skip "cannot install $pkg into the container root"
    fi
done

# --- boot -----------------------------------------------------------------------------------
rm -rf "$RUN"
cp -a --reflink=auto "$ROOT" "$RUN"
cp "$DEB" "$RUN/root/chatwatch.deb"
systemd-nspawn -q -D "$RUN" --boot --register=no --keep-unit --private-network \
    --machine=chatwatch-test </dev/null >"$CACHE/console.log" 2>&1 &
NSPAWN=$!
LEADER=
cleanup() {
    if kill -0 "$NSPAWN" 2>/dev/null; then
        kill -TERM "$NSPAWN" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$NSPAWN" 2>/dev/null
    fi
    wait "$NSPAWN" 2>/dev/null
    rm -rf "$RUN"
}
trap cleanup EXIT
for _ in $(seq 1 150); do
    for child in $(pgrep -P "$NSPAWN" 2>/dev/null); do
        if grep -Eq '^NSpid:.*[[:space:]]1$' "/proc/$child/status" 2>/dev/null; then LEADER=$child; fi
    done
    [ -n "$LEADER" ] && break
    kill -0 "$NSPAWN" 2>/dev/null || break
    sleep 0.2
done
if [ -z "$LEADER" ]; then
    cat "$CACHE/console.log" >&2
    skip "systemd-nspawn did not boot the container (see $CACHE/console.log)"
fi
inside() { nsenter -t "$LEADER" -a -- "$@"; }
# The container's network namespace with the host's tools (curl).
innet() { nsenter -t "$LEADER" -n -- "$@"; }
# The bus appears a moment after PID 1 starts: ask again until it answers.
state=
deadline=$(($(date +%s) + 90))
while [ "$(date +%s)" -lt "$deadline" ]; do
    state=$(timeout 60 nsenter -t "$LEADER" -a -- systemctl is-system-running --wait 2>/dev/null)
    case "$state" in running | degraded) break ;; esac
    sleep 0.5
done
case "$state" in
    running | degraded) ;;
    *) skip "the container's systemd did not come up (state '$state')" ;;
esac

# --- checks ---------------------------------------------------------------------------------
PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "systemd: ok   $1"; }
fail() {
    FAILED=$((FAILED + 1))
    echo "systemd: FAIL $1"
    shift
    [ $# -gt 0 ] && printf '    %s\n' "$@"
}
# Waits up to $1 seconds for the command to succeed.
wait_for() {
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -ge "$deadline" ] && return 1
        sleep 0.3
    done
}
prop() { inside systemctl show -p "$1" --value chatwatch.service; }
journal() { inside journalctl -q --no-pager -u chatwatch.service "$@"; }

# 1. Install: enabled, and its start skipped cleanly while no password exists.
if out=$(inside dpkg -i /root/chatwatch.deb 2>&1) &&
    [ "$(inside systemctl is-enabled chatwatch)" = enabled ] &&
    [ "$(prop ActiveState)" = inactive ] && [ "$(prop ConditionResult)" = no ] &&
    [ "$(inside stat -c %a /etc/chatwatch/secrets)" = 700 ] &&
    inside getent passwd chatwatch >/dev/null; then
    pass "install: enabled, user chatwatch, secrets/ 0700, not started before it is configured"
else
    fail "install" "$out" "$(inside systemctl status chatwatch 2>&1 | tail -n 5)"
fi

# The simulator (inside: the network is private) and a configuration using it.
PASSWORD=cred-$RANDOM$RANDOM
inside systemd-run -q --unit=gws-sim /usr/bin/chatwatch sim --listen 127.0.0.1:8090 \
    --user "agent1:$PASSWORD" --offer 100000 --rate 4 --agents agent1
wait_for 20 innet curl -s -o /dev/null http://127.0.0.1:8090/
cat >"$RUN/etc/chatwatch/config.toml" <<EOF
# written by tests/systemd/run.sh
[[accounts]]
name = "main"
url = "http://127.0.0.1:8090"
username = "agent1"
password_credential = "gws-password"

[admin]
listen = "127.0.0.1:9464"

[journal]
dir = "/var/lib/chatwatch/journal"

[sinks.events]
type = "file"
path = "/var/log/chatwatch/events.jsonl"
EOF
cp "$RUN/etc/chatwatch/config.toml" "$CACHE/good.toml"
umask 077
printf '%s\n' "$PASSWORD" >"$RUN/etc/chatwatch/secrets/gws-password"
umask 022
# Every check below runs with SIGSYS as the answer to a filtered system call; the watchdog is
# shortened to keep the run short (the shipped 30 s behaves the same, later).
mkdir -p "$RUN/etc/systemd/system/chatwatch.service.d"
cat >"$RUN/etc/systemd/system/chatwatch.service.d/test.conf" <<EOF
[Service]
SystemCallErrorNumber=kill
WatchdogSec=10s
EOF
inside systemctl daemon-reload

# 2. Start: Type=notify, READY=1 (the start job returns only after it), STATUS= text.
if out=$(inside timeout 70 systemctl start chatwatch 2>&1) && [ "$(prop ActiveState)" = active ] &&
    [ "$(prop Type)" = notify ] && [ -n "$(prop StatusText)" ]; then
    pass "start: Type=notify ready, STATUS=\"$(prop StatusText)\""
else
    fail "start" "$out" "$(journal -n 20 2>&1)"
fi

# 3. /readyz: 200 once the session is subscribed, which needs the password from the credential.
ready() { [ "$(innet curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9464/readyz)" = 200 ]; }
if wait_for 30 ready; then
    pass "/readyz 200 (subscribed with the password from LoadCredential=)"
else
    fail "/readyz" "$(innet curl -s http://127.0.0.1:9464/readyz)" "$(journal -n 20 2>&1)"
fi

# 4. The credential: the daemon got it, its files never hold it.
cred_ok() { inside test -e /run/credentials/chatwatch.service/gws-password; }
if cred_ok && ! inside grep -rqs "$PASSWORD" /var/log/chatwatch /var/lib/chatwatch &&
    ! journal -o cat | grep -q "$PASSWORD"; then
    pass "LoadCredential=: present in \$CREDENTIALS_DIRECTORY, absent from logs and files"
else
    fail "credential" "$(inside ls -la /run/credentials/chatwatch.service/ 2>&1)"
fi

# 5. Native journald fields.
fields_ok() { journal ACCOUNT=main -o verbose -n 50 | grep -q '^ *ACCOUNT=main$'; }
if wait_for 20 fields_ok; then
    pass "journald fields: journalctl -u chatwatch ACCOUNT=main -o verbose"
else
    fail "journald fields" "$(journal -o verbose -n 3 2>&1 | head -n 40)"
fi

# 6. Events in the file sink, mode 0640 group chatwatch under UMask=0077.
events_ok() { inside grep -q '"kind"' /var/log/chatwatch/events.jsonl; }
if wait_for 30 events_ok &&
    [ "$(inside stat -c '%a %U:%G' /var/log/chatwatch/events.jsonl)" = "640 chatwatch:chatwatch" ] &&
    [ "$(inside stat -c '%a' /var/log/chatwatch)" = 750 ]; then
    pass "events in /var/log/chatwatch/events.jsonl ($(wc -l <"$RUN/var/log/chatwatch/events.jsonl") lines), 0640 chatwatch:chatwatch in a 0750 directory"
else
    fail "file sink" "$(inside ls -la /var/log/chatwatch/ 2>&1)"
fi

# 7. The schema at the admin listener.
# (captured first: with pipefail, grep -q closing the pipe early would fail curl)
served=$(innet curl -sf http://127.0.0.1:9464/schema/event.v1.json)
if grep -q '"chatwatch.event.v1"' <<<"$served"; then
    pass "GET /schema/event.v1.json"
else
    fail "schema endpoint"
fi

# 8. Reload, good: a new sink appears, exit 0.
cat "$CACHE/good.toml" >"$RUN/etc/chatwatch/config.toml"
cat >>"$RUN/etc/chatwatch/config.toml" <<EOF

[sinks.left]
type = "file"
path = "/var/log/chatwatch/left.jsonl"
filter = { entered_states = ["LeftChat"] }
EOF
pid_before=$(prop MainPID)
if out=$(inside systemctl reload chatwatch 2>&1) && inside test -e /var/log/chatwatch/left.jsonl &&
    [ "$(prop MainPID)" = "$pid_before" ] && [ "$(prop ActiveState)" = active ]; then
    pass "systemctl reload (good file): exit 0, the new sink opened, same process"
else
    fail "reload good" "$out" "$(journal -n 15 2>&1)"
fi

# 9. Reload, broken: non-zero, the reason in the journal, the old configuration keeps working.
printf 'no_such_key = 1\n' >>"$RUN/etc/chatwatch/config.toml"
lines_before=$(wc -l <"$RUN/var/log/chatwatch/events.jsonl")
grew() { [ "$(wc -l <"$RUN/var/log/chatwatch/events.jsonl")" -gt "$lines_before" ]; }
if out=$(inside systemctl reload chatwatch 2>&1); then
    fail "reload broken: systemctl reload exited 0" "$out"
elif journal -o cat | grep -q 'reload failed.*no_such_key' && [ "$(prop ActiveState)" = active ] &&
    wait_for 20 grew && ready; then
    pass "systemctl reload (broken file): fails, reason in the journal, still running on the old one"
else
    fail "reload broken" "$out" "$(journal -n 15 -o cat 2>&1)"
fi
cat "$CACHE/good.toml" >"$RUN/etc/chatwatch/config.toml"
inside systemctl reload chatwatch >/dev/null 2>&1

# 10. Plain SIGHUP still reloads.
n_ok() { journal -o cat | grep -c 'configuration reloaded'; }
before=$(n_ok)
inside systemctl kill -s HUP --kill-whom=main chatwatch
hup_ok() { [ "$(n_ok)" -gt "$before" ]; }
if wait_for 15 hup_ok; then pass "SIGHUP reloads"; else fail "SIGHUP" "$(journal -n 10 -o cat)"; fi

# 11. No SIGSYS under SystemCallErrorNumber=kill (start, sessions, sinks, reloads so far).
if [ "$(prop NRestarts)" = 0 ] && ! journal | grep -q 'SYS' && [ "$(prop ActiveState)" = active ]; then
    pass "no SIGSYS under SystemCallErrorNumber=kill (no restart, no 31/SYS)"
else
    fail "seccomp" "$(journal | grep SYS | tail -n 3)"
fi

# 12. The watchdog kills a stopped daemon (SIGABRT) and systemd restarts it.
old=$(prop MainPID)
inside systemctl kill -s STOP --kill-whom=main chatwatch
restarted() { [ "$(prop NRestarts)" -ge 1 ] && [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" != "$old" ]; }
watchdog_fired() { restarted && journal | grep -q 'Watchdog timeout'; }
if wait_for 90 watchdog_fired; then
    how=$(journal -o cat | grep -m1 -Eo 'Main process exited, code=[a-z]+, status=[0-9]+/[A-Z]+')
    pass "watchdog: a SIGSTOPped daemon is killed ($how) and restarted"
else
    fail "watchdog" "$(journal -n 10 2>&1)"
fi

# 13. Clean stop.
if out=$(inside timeout 60 systemctl stop chatwatch 2>&1) && [ "$(prop ActiveState)" = inactive ] &&
    [ "$(prop Result)" = success ] && journal -o cat | grep -q 'chatwatch stopped'; then
    pass "clean stop (Result=success)"
else
    fail "stop" "$out" "$(journal -n 10 2>&1)"
fi

# 14. Upgrade: dpkg -i the same package over a running, configured service.
inside systemctl start chatwatch >/dev/null 2>&1
old=$(prop MainPID)
if out=$(inside dpkg -i --force-confold /root/chatwatch.deb 2>&1) &&
    inside grep -q 'written by tests/systemd/run.sh' /etc/chatwatch/config.toml &&
    wait_for 30 ready && [ "$(prop MainPID)" != "$old" ] && [ "$(prop ActiveState)" = active ]; then
    pass "upgrade: dpkg -i again keeps the edited conffile and restarts the service"
else
    fail "upgrade" "$out"
fi

# 15. Purge: everything goes.
inside systemctl stop gws-sim >/dev/null 2>&1
# shellcheck disable=SC2016
no_chatwatch_process='for p in /proc/[0-9]*; do [ "$(cat "$p/comm" 2>/dev/null)" = chatwatch ] && exit 1; done; exit 0'
if out=$(inside dpkg --purge chatwatch 2>&1) && ! inside test -e /usr/bin/chatwatch &&
    ! inside test -e /etc/chatwatch && ! inside test -e /var/lib/chatwatch &&
    ! inside test -e /var/log/chatwatch && [ "$(prop LoadState)" = not-found ] &&
    inside sh -c "$no_chatwatch_process"; then
    pass "purge: binary, configuration, secrets, state and logs removed, service gone"
else
    fail "purge" "$out" "$(inside ls -la /etc/chatwatch /var/lib/chatwatch 2>&1)"
fi

echo "systemd: $PASSED passed, $FAILED failed ($(($(date +%s) - START)) s)"
[ "$FAILED" = 0 ]
