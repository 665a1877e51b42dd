#!/usr/bin/env bash
# What a job costs on AWS, from what the local stack counted: infra/cost.py runs the
# example jobs of docs/aws.md on the local stack and prices what they used (us-east-1).
#   bash infra/cost.sh [--jobs N] [--bin-dir target/release]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/services.sh install moto >&2
bash tests/fixtures/make.sh "$PWD/target/test-fixtures" >&2
exec target/test-services/venv/bin/python infra/cost.py "$@"
