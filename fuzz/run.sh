#!/usr/bin/env bash
# A bounded fuzzing session of every RunConvert fuzz target (cargo-fuzz, libFuzzer).
#
#   bash fuzz/run.sh                       # every target, 60 s each, AddressSanitizer
#   FUZZ_SECONDS=600 bash fuzz/run.sh pdf_load image_decode
#   SANITIZER=none bash fuzz/run.sh        # no ASan: faster, finds panics only
#
# Targets (fuzz/fuzz_targets/*.rs):
#   job_request   request JSON → validate_job → the stored job → the planner to the end
#   planner       a stored job made from bytes → planner::plan and its documented rules
#   image_decode  file bytes → raster::probe / decode_probed (1 MP limit) → resize
#   pdf_load      file bytes → pdf::page_count (load), merge of that one PDF, compress
#   detect        file bytes → detect::sniff (zips: their entries), check_format, input_format
#
# Environment:
#   FUZZ_SECONDS        seconds per target (libFuzzer -max_total_time), default 60
#   FUZZ_UNIT_TIMEOUT   seconds one input may take before it counts as a hang, default 30
#   SANITIZER           address (default) or none; with the default, a build that fails
#                       because this toolchain cannot do ASan falls back to none
#   CORPUS_SRC          files to seed the file targets with, default the tests' own
#                       fixtures (target/test-fixtures, made by tests/fixtures/make.sh
#                       when missing); only files under 300 KB are used
#
# cargo-fuzz passes nightly-only -Z flags; with RUSTC_BOOTSTRAP=1 the stable rustc the
# rest of the project builds with takes them, so no nightly toolchain is needed.
#
# Seeds: fuzz/seeds/<target>/ (committed, small) plus, for the file targets, the small
# images and PDFs of the test fixtures, copied into fuzz/corpus/<target>/ at run time
# (fuzz/corpus is not committed; libFuzzer adds what it finds there).
# Crashes land in fuzz/artifacts/<target>/ (crash-*, oom-*, timeout-*, leak-*); replay one
# with `RUSTC_BOOTSTRAP=1 cargo fuzz run -s <sanitizer> <target> fuzz/artifacts/<target>/<file>`.
# Exit status: 0 when no target found anything, 1 when some did, 2 when the build failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$ROOT/fuzz"
ALL_TARGETS=(job_request planner image_decode pdf_load detect)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
UNIT_TIMEOUT="${FUZZ_UNIT_TIMEOUT:-30}"
SANITIZER_EXPLICIT="${SANITIZER:+yes}"
SANITIZER="${SANITIZER:-address}"
if [ -z "${CORPUS_SRC:-}" ]; then
    CORPUS_SRC="$ROOT/target/test-fixtures"
    bash "$ROOT/tests/fixtures/make.sh" "$CORPUS_SRC" >&2 || echo "run.sh: no fixtures; seeds only" >&2
fi

for t in "${TARGETS[@]}"; do
    case " ${ALL_TARGETS[*]} " in
        *" $t "*) ;;
        *) echo "run.sh: unknown target $t (targets: ${ALL_TARGETS[*]})" >&2; exit 2 ;;
    esac
done
[[ "$SECONDS_PER_TARGET" =~ ^[1-9][0-9]*$ ]] || {
    # libFuzzer reads -max_total_time=0 as "no limit": never let a typo run forever.
    echo "run.sh: FUZZ_SECONDS must be a whole number of seconds above 0, not '$SECONDS_PER_TARGET'" >&2
    exit 2
}
case "$SANITIZER" in
    address|none) ;;
    *) echo "run.sh: SANITIZER must be address or none, not $SANITIZER" >&2; exit 2 ;;
esac

# ---- cargo-fuzz -------------------------------------------------------------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    # Installed as any stable tool: without RUSTC_BOOTSTRAP, which only the fuzz build needs.
    env -u RUSTC_BOOTSTRAP cargo install cargo-fuzz --locked || {
        echo "run.sh: could not install cargo-fuzz" >&2
        exit 2
    }
fi
# From here on stable rustc takes the nightly flags cargo-fuzz passes (-Zsanitizer, ...).
export RUSTC_BOOTSTRAP=1
echo "==> $(cargo fuzz --version)"
# `-s/--sanitizer <address|leak|memory|thread|none>`: both values this script uses must be there.
fuzz_help="$(cargo fuzz build --help 2>&1)"
if ! grep -q -- '--sanitizer' <<<"$fuzz_help" || ! grep -q 'none' <<<"$fuzz_help"; then
    echo "run.sh: this cargo-fuzz has no --sanitizer none option; update it (cargo install cargo-fuzz --locked)" >&2
    exit 2
fi

# ---- seeds ------------------------------------------------------------------------------
# The fuzz crate is its own workspace: start from the main workspace's lock so the engines'
# dependencies are the versions the rest of the project builds and tests with.
[ -f "$FUZZ/Cargo.lock" ] || cp "$ROOT/Cargo.lock" "$FUZZ/Cargo.lock"

copy_small() { # copy_small <src dir> <dest dir>: regular files under 300 KB
    [ -d "$1" ] || { echo "    (no $1: skipped)"; return 0; }
    find "$1" -maxdepth 1 -type f -size -300k ! -name '*.txt' -exec cp -f {} "$2/" \;
}
for t in "${TARGETS[@]}"; do
    corpus="$FUZZ/corpus/$t"
    mkdir -p "$corpus" "$FUZZ/artifacts/$t"
    [ -d "$FUZZ/seeds/$t" ] && cp -f "$FUZZ/seeds/$t"/* "$corpus/" 2>/dev/null
    case "$t" in
        image_decode) copy_small "$CORPUS_SRC/images" "$corpus" ;;
        pdf_load) copy_small "$CORPUS_SRC/pdf" "$corpus" ;;
        detect)
            copy_small "$CORPUS_SRC/images" "$corpus"
            copy_small "$CORPUS_SRC/pdf" "$corpus"
            cp -f "$FUZZ/seeds/image_decode"/* "$FUZZ/seeds/pdf_load"/* "$corpus/" 2>/dev/null
            ;;
    esac
    chmod -R u+w "$corpus" # the shared corpus is read-only; libFuzzer's corpus is not
    echo "==> $t: $(find "$corpus" -type f | wc -l) seed files in fuzz/corpus/$t"
done

# ---- build ------------------------------------------------------------------------------
cd "$ROOT" || exit 2
echo "==> building the fuzz targets (sanitizer: $SANITIZER; the first build takes a while)"
build_targets() { # build_targets <sanitizer>: what `cargo fuzz run` will run, same flags
    local t
    for t in "${TARGETS[@]}"; do
        cargo fuzz build -s "$1" "$t" || return 1
    done
}
if ! build_targets "$SANITIZER"; then
    if [ "$SANITIZER" = address ] && [ -z "$SANITIZER_EXPLICIT" ]; then
        echo "==> the AddressSanitizer build failed on this toolchain; falling back to SANITIZER=none" >&2
        SANITIZER=none
        build_targets none || { echo "run.sh: the fuzz targets do not build" >&2; exit 2; }
    else
        echo "run.sh: the fuzz targets do not build (sanitizer $SANITIZER)" >&2
        exit 2
    fi
fi

# ---- fuzz -------------------------------------------------------------------------------
found=()
marker="$(mktemp)"
for t in "${TARGETS[@]}"; do
    echo
    echo "==> fuzzing $t for ${SECONDS_PER_TARGET}s"
    touch "$marker"
    extra=()
    # The JPEG decoder's worker threads may still be exiting when LeakSanitizer checks after
    # an input: it then reports their thread-local state as leaked (seen once in a 600 s
    # session; that input replays clean 20 times in a row). Leak checks are off for this
    # target only; AddressSanitizer's other checks stay on.
    [ "$t" = image_decode ] && [ "$SANITIZER" = address ] && extra+=(-detect_leaks=0)
    cargo fuzz run -s "$SANITIZER" "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout="$UNIT_TIMEOUT" \
        -print_final_stats=1 "${extra[@]}"
    rc=$?
    new=$(find "$FUZZ/artifacts/$t" -type f -newer "$marker" \
        \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | sort)
    if [ $rc -ne 0 ] || [ -n "$new" ]; then
        found+=("$t")
        echo "!!> $t: cargo fuzz exited $rc"
        [ -n "$new" ] && printf '!!> new artifact: %s\n' "$new"
    else
        echo "==> $t: nothing found"
    fi
done
rm -f "$marker"

echo
if [ ${#found[@]} -gt 0 ]; then
    echo "==> FOUND problems in: ${found[*]}"
    for t in "${found[@]}"; do
        echo "    fuzz/artifacts/$t/:"
        find "$FUZZ/artifacts/$t" -type f | sort | tail -5 | sed 's/^/      /'
        echo "    replay: RUSTC_BOOTSTRAP=1 cargo fuzz run -s $SANITIZER $t fuzz/artifacts/$t/<file>"
    done
    exit 1
fi
echo "==> all targets ran ${SECONDS_PER_TARGET}s each; no crash, hang, OOM or leak (artifacts: fuzz/artifacts/)"
exit 0
