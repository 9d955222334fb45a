#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/) for a bounded time; exits non-zero on
# a crash, a hang or a failed invariant (the input is left in
# fuzz/artifacts/<target>/ for `cargo +nightly fuzz run <target> FILE`).
#
#   FUZZ_SECONDS=600 .ci/fuzz.sh            # longer runs
#   FUZZ_SECONDS=30 .ci/fuzz.sh headers     # one target
#
# The committed seeds in fuzz/corpus/<target>/ are read, never written:
# inputs the fuzzer finds go to a scratch corpus under fuzz/corpus-run/.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(session headers)
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Build every target first, so the time limit below is spent fuzzing.
(cd fuzz && cargo +nightly fuzz build)

status=0
for target in "${targets[@]}"; do
    scratch="fuzz/corpus-run/$target"
    mkdir -p "$scratch"
    echo "fuzz: $target for ${seconds}s"
    # -timeout: one input running over 10 s counts as a hang;
    # -rss_limit_mb: a memory blow-up counts as a crash.
    if ! (cd fuzz && cargo +nightly fuzz run "$target" "corpus-run/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1); then
        echo "fuzz: $target FAILED; the input is in fuzz/artifacts/$target/" >&2
        status=1
    fi
done
exit "$status"
