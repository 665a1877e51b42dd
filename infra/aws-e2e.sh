#!/usr/bin/env bash
# The AWS path, end to end, on this machine: moto (DynamoDB, S3, SQS, Step Functions
# executing statemachine/job.asl.json) and runconvert-aws-local (the front that answers
# moto's Lambda invocations with the real handlers, the API over HTTP, the SQS poller of
# the webhook handler), driven by tests/aws.rs: the spec's example jobs through the API
# handler → DynamoDB → Step Functions → worker handlers → S3 → SQS → webhook.
# Installs what it needs (moto in a venv, via tests/services.sh), starts and stops moto.
# Exit status 0 only when the suite passes.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[aws-e2e] %s\n' "$*" >&2; }

command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup first" >&2; exit 1; }
# The tests' own input files (made once, from nothing outside the repository).
if [ -z "${RUNCONVERT_CORPUS:-}" ]; then
  bash tests/fixtures/make.sh "$PWD/target/test-fixtures"
  export RUNCONVERT_CORPUS="$PWD/target/test-fixtures"
fi

log "starting moto"
trap 'bash tests/services.sh stop moto' EXIT
bash tests/services.sh start moto >/dev/null
# shellcheck disable=SC1091
source target/test-services/env.sh
log "building"
cargo build --locked -p runconvert -p runconvert-aws --bins
log "running tests/aws.rs"
cargo test --locked -p runconvert-tests --test aws -- --test-threads=1
