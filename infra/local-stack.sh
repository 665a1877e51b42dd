#!/usr/bin/env bash
# The AWS deployment on this machine, function by function (no Docker, no AWS account):
# moto plays DynamoDB, S3, SQS, SSM and Step Functions (executing the state machine's
# definition); every function of template.yaml runs as its own process, the Lambda
# Runtime API spoken to an emulator, with the environment, memory and timeout the
# template gives it; the API is reached as API Gateway HTTP API (payload 2.0) events.
# See infra/local/stack.py for what each part plays.
#
#   bash infra/local-stack.sh [--allow-private-networks] [--upload-timeout SECONDS] [--no-build]
#
# Prints `API <url>`, `KEY <api key>` and then `READY`; Ctrl-C (SIGINT) or SIGTERM stops
# everything it started. Installs what it needs (moto in a venv, via tests/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
args=()
for a in "$@"; do
  case "$a" in
    --no-build) build=0 ;;
    *) args+=("$a") ;;
  esac
done
command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup first" >&2; exit 1; }
bash tests/services.sh install moto >&2
if [ "$build" = 1 ]; then
  echo "[local-stack] cargo build -p runconvert-aws -p runconvert-aws-engine -p runconvert-aws-transfer --bins" >&2
  cargo build --locked -p runconvert-aws -p runconvert-aws-engine -p runconvert-aws-transfer --bins >&2
fi
exec target/test-services/venv/bin/python infra/local/stack.py "${args[@]}"
