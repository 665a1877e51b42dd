#!/usr/bin/env bash
# Offline checks of the AWS deployment files (no AWS account, no network but the package
# registries for the first install):
#   cfn-lint template.yaml                        CloudFormation + SAM transform rules
#   sam validate --lint                           the SAM CLI's own lint of the template
#   asl-validator statemachine/job.asl.json       Amazon States Language schema + paths
#
#   bash infra/lint.sh
#
# Tools are installed once, only when missing, under target/test-services/:
#   lint-venv/  a Python venv with cfn-lint and aws-sam-cli
#   node/       asl-validator (npm; the same prefix tests/services.sh uses for azurite)
# The venv is kept apart from tests/services.sh's venv/ (moto): aws-sam-cli pins older
# boto3/botocore/pydantic/click than moto's, and that venv runs the moto server the tests
# talk to. RC_LINT_VENV overrides the location.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=$ROOT/target/test-services
VENV=${RC_LINT_VENV:-$STATE/lint-venv}
NODE_PREFIX=$STATE/node
TEMPLATE=$ROOT/template.yaml
ASL=$ROOT/statemachine/job.asl.json

log() { printf '[lint] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ -f "$TEMPLATE" ] || die "missing $TEMPLATE"
[ -f "$ASL" ] || die "missing $ASL"

# --- tools ---------------------------------------------------------------------------------
install_python_tools() {
  if [ -x "$VENV/bin/cfn-lint" ] && [ -x "$VENV/bin/sam" ]; then
    return 0
  fi
  command -v python3 >/dev/null || die "python3 is needed"
  if [ ! -x "$VENV/bin/python" ]; then
    log "python3 -m venv $VENV"
    python3 -m venv "$VENV"
  fi
  log "pip install cfn-lint aws-sam-cli into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check cfn-lint aws-sam-cli >&2
  [ -x "$VENV/bin/cfn-lint" ] && [ -x "$VENV/bin/sam" ] || die "cfn-lint or sam missing after pip install"
}

install_node_tools() {
  if [ -x "$NODE_PREFIX/node_modules/.bin/asl-validator" ]; then
    return 0
  fi
  command -v npm >/dev/null || die "npm is needed (apt-get install npm)"
  log "npm install asl-validator into $NODE_PREFIX"
  mkdir -p "$NODE_PREFIX"
  npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --no-update-notifier \
    --loglevel=error asl-validator >&2
  [ -x "$NODE_PREFIX/node_modules/.bin/asl-validator" ] || die "asl-validator missing after npm install"
}

install_python_tools
install_node_tools

# --- offline environment -------------------------------------------------------------------
# Fake credentials and a fixed region: nothing below calls AWS, but boto3 sessions are
# created on the way. No telemetry, no update check.
export AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN
export AWS_EC2_METADATA_DISABLED=true
export SAM_CLI_TELEMETRY=0
export SAM_CLI_BETA_RUST_CARGO_LAMBDA=1
# sam reads and writes its config (telemetry id, update-check stamp) under this folder.
export SAM_CLI_CONFIG_DIR=${SAM_CLI_CONFIG_DIR:-$STATE/sam-config}
mkdir -p "$SAM_CLI_CONFIG_DIR"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cd "$ROOT"

# --- 1. cfn-lint ---------------------------------------------------------------------------
log "cfn-lint $("$VENV/bin/cfn-lint" --version 2>&1 | awk '{print $NF}'): cfn-lint template.yaml"
"$VENV/bin/cfn-lint" template.yaml || die "cfn-lint failed"

# --- 2. sam validate --lint ----------------------------------------------------------------
log "$("$VENV/bin/sam" --version): sam validate --lint --region us-east-1"
"$VENV/bin/sam" validate --lint --region us-east-1 --template-file template.yaml \
  || die "sam validate --lint failed"

# --- 3. asl-validator ----------------------------------------------------------------------
# DefinitionSubstitutions (${Name}) are filled in by SAM at deploy time; the validator checks
# Resource fields against the ARN pattern, so a copy gets dummy values of the right shapes.
asl_copy=$tmp/job.asl.json
"$VENV/bin/python" - "$ASL" "$asl_copy" <<'PY'
import json, re, sys
src, dst = sys.argv[1], sys.argv[2]
text = open(src, encoding="utf-8").read()
def dummy(m):
    name = m.group(1)
    if name.endswith("FunctionArn"):
        return "arn:aws:lambda:us-east-1:123456789012:function:" + name[: -len("Arn")]
    if name.endswith("QueueUrl"):
        return "https://sqs.us-east-1.amazonaws.com/123456789012/" + name[: -len("Url")]
    sys.exit(f"no dummy value for substitution ${{{name}}}")
out = re.sub(r"\$\{([A-Za-z0-9_]+)\}", dummy, text)
json.loads(out)  # still JSON
open(dst, "w", encoding="utf-8").write(out)
PY
asl_version=$(node -p "require('$NODE_PREFIX/node_modules/asl-validator/package.json').version")
log "asl-validator $asl_version: asl-validator --json-path statemachine/job.asl.json (substituted copy)"
"$NODE_PREFIX/node_modules/.bin/asl-validator" --json-path "$asl_copy" \
  || die "asl-validator failed"

log "all passed"
