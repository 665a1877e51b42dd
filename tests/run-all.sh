#!/usr/bin/env bash
# The whole test suite, from a clean checkout, on a Debian machine with a Rust toolchain.
# It installs what the tests need when it is missing (idempotent; nothing is reinstalled),
# starts the servers the tests need and stops them, then runs formatting, lint and every
# test. Exit status 0 only when all of it passes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '[run-all %s] %s\n' "$(date +%T)" "$*" >&2; }

# --- system packages -------------------------------------------------------------
# gcc builds the bundled SQLite; pkg-config and ca-certificates serve the TLS stack.
apt_pkgs=()
command -v cc >/dev/null || apt_pkgs+=(gcc)
command -v pkg-config >/dev/null || apt_pkgs+=(pkg-config)
[ -e /etc/ssl/certs/ca-certificates.crt ] || apt_pkgs+=(ca-certificates)
# Poppler renders PDF pages (an engine of the server, and the tests' eye on PDFs);
# qpdf makes the password-protected PDF of the bad-input tests.
command -v pdftoppm >/dev/null || apt_pkgs+=(poppler-utils)
command -v qpdf >/dev/null || apt_pkgs+=(qpdf)
# curl and openssl: the HTTPS test makes a throwaway certificate and talks to it.
command -v curl >/dev/null || apt_pkgs+=(curl)
command -v openssl >/dev/null || apt_pkgs+=(openssl)
# infra/lint.sh (below, before the storage servers) needs a Python venv and npm.
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_pkgs+=(python3-venv)
command -v npm >/dev/null || apt_pkgs+=(nodejs npm)
# The engines: Tesseract for OCR, FFmpeg for audio and video, LibreOffice for documents.
command -v tesseract >/dev/null || apt_pkgs+=(tesseract-ocr)
[ -n "$(ls /usr/share/tesseract-ocr/*/tessdata/eng.traineddata 2>/dev/null)" ] || apt_pkgs+=(tesseract-ocr-eng)
command -v ffmpeg >/dev/null || apt_pkgs+=(ffmpeg)
command -v soffice >/dev/null || apt_pkgs+=(libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui)
dpkg -s python3-uno >/dev/null 2>&1 || apt_pkgs+=(python3-uno)
# Chromium for capture_website and html/md → pdf.
command -v chromium >/dev/null || apt_pkgs+=(chromium)
# The tests' own input files (tests/fixtures/make.sh): ImageMagick, Ghostscript and fonts.
[ -x /usr/bin/convert ] && /usr/bin/convert -version 2>/dev/null | grep -q 'ImageMagick 6' || apt_pkgs+=(imagemagick)
command -v gs >/dev/null || apt_pkgs+=(ghostscript)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf ] || apt_pkgs+=(fonts-dejavu-core)
# jpegtran makes the arithmetic-coded JPEG of tests/image_variants.rs.
command -v jpegtran >/dev/null || apt_pkgs+=(libjpeg-turbo-progs)
# nasm assembles mozjpeg's x86 SIMD (without it the JPEG encoder builds, slower).
command -v nasm >/dev/null || apt_pkgs+=(nasm)
command -v flock >/dev/null || apt_pkgs+=(util-linux)
# tests/abuse.rs stops a server with /bin/kill and limits one with prlimit.
{ [ -x /bin/kill ] || [ -x /usr/bin/kill ]; } || apt_pkgs+=(procps)
command -v prlimit >/dev/null || apt_pkgs+=(util-linux)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  log "installing ${apt_pkgs[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${apt_pkgs[@]}"
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy >/dev/null 2>&1 || true

# --- the tests' input files -----------------------------------------------------------
# Made here, deterministically, from nothing outside the repository (RUNCONVERT_CORPUS
# overrides, e.g. to run the tests on another set of files).
if [ -z "${RUNCONVERT_CORPUS:-}" ]; then
  log "test fixtures (tests/fixtures/make.sh target/test-fixtures)"
  bash tests/fixtures/make.sh "$root/target/test-fixtures"
  export RUNCONVERT_CORPUS="$root/target/test-fixtures"
fi

# --- checks and tests -------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The AWS deployment files, offline: cfn-lint, sam validate (--lint and the translator),
# asl-validator on the state machine (installs the tools on first use).
log "infra/lint.sh"
bash infra/lint.sh
log "cargo build"
cargo build --workspace --all-targets --locked
# The storage servers of the connector tests (moto, Azurite, the GCS emulator, sshd),
# installed when missing, stopped when this script ends.
log "starting the storage servers"
trap 'bash "$root/tests/services.sh" stop' EXIT
bash tests/services.sh start >/dev/null
# shellcheck disable=SC1091
source target/test-services/env.sh
log "cargo test"
cargo test --workspace --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
# `sam build` of every zip function as a user runs it (arm64, cargo-lambda with zig), with
# each package's size; SAM_BUILD=0 skips it (it is a second, release, cross build).
if [ "${SAM_BUILD:-1}" != 0 ]; then
  log "infra/sam-build.sh"
  bash infra/sam-build.sh
fi
# The fuzz targets build and each runs briefly on its seeds (which keep the inputs of
# crashes once found and fixed) plus what it mutates from them; longer sessions:
# `FUZZ_SECONDS=600 bash fuzz/run.sh`. FUZZ_SECONDS=0 skips this step.
# FUZZ_SANITIZER=address for AddressSanitizer (a much longer build).
fuzz_seconds="${FUZZ_SECONDS:-20}"
if [ "$fuzz_seconds" != 0 ]; then
  log "fuzz targets (bash fuzz/run.sh, $fuzz_seconds s each, sanitizer ${FUZZ_SANITIZER:-none})"
  SANITIZER="${FUZZ_SANITIZER:-none}" FUZZ_SECONDS="$fuzz_seconds" bash fuzz/run.sh
fi
