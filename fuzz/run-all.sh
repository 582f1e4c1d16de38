#!/bin/sh
# Runs every fuzz target for SECONDS each (default 600), one after the other on one core. New
# interesting inputs land in fuzz/corpus/<target>/ (review, then `cargo +nightly fuzz cmin <target>` before committing), and
# crashes in fuzz/artifacts/<target>/ (add each as fuzz/regressions/<target>/<name> with its fix).
# Usage: fuzz/run-all.sh [SECONDS]     (nightly toolchain and `cargo install cargo-fuzz` needed)
set -eu
seconds="${1:-600}"
cd "$(dirname "$0")/.."
for target in bayeux_response websocket_frame gws_decode journal_recovery audit_verify config_load; do
    echo "== $target: ${seconds}s"
    # One process on one core (libFuzzer's default; -jobs=N would fork N and log to files).
    cargo +nightly fuzz run "$target" fuzz/corpus/"$target" fuzz/regressions/"$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1
done
