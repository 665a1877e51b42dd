#!/usr/bin/env bash
# The AWS deployment, end to end, on this machine: tests/aws.rs starts the local stack
# (infra/local/stack.py, what `bash infra/local-stack.sh` runs): moto for DynamoDB, S3,
# SQS and Step Functions (executing the state machine's definition), every function of
# template.yaml as its own process through the Lambda Runtime API, the API reached as API
# Gateway payload 2.0 events; then drives the spec's example jobs and the faults (a worker
# killed mid-task, one past its Timeout, a plan step that dies, a refused StartExecution).
# Installs what it needs (moto in a venv, via tests/services.sh). Exit status 0 only when
# the suite passes.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[aws-e2e] %s\n' "$*" >&2; }

command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup first" >&2; exit 1; }
# The tests' own input files (made once, from nothing outside the repository).
if [ -z "${RUNCONVERT_CORPUS:-}" ]; then
  bash tests/fixtures/make.sh "$PWD/target/test-fixtures"
  export RUNCONVERT_CORPUS="$PWD/target/test-fixtures"
fi
bash tests/services.sh install moto >&2
log "building"
cargo build --locked -p runconvert -p runconvert-aws -p runconvert-aws-engine -p runconvert-aws-transfer --bins
log "running tests/aws.rs"
cargo test --locked -p runconvert-tests --test aws -- --test-threads=1
