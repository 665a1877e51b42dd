#!/usr/bin/env bash
# Offline checks of the AWS deployment files: no AWS account and no network are needed
# once the tools are installed (the first run installs them from PyPI and npm).
#
#   bash infra/lint.sh
#
#   1. cfn-lint template.yaml                   CloudFormation/SAM schemas and rules
#   2. sam validate --lint --region us-east-1   the SAM CLI's lint (cfn-lint inside sam)
#   3. sam validate --region us-east-1          the SAM translator itself (what CloudFormation
#                                               runs at deploy: policy templates, events, ...)
#   4. cfn-lint on the translated template, with statemachine/job.asl.json inlined as the
#      state machine's Definition: the rules that only see plain CloudFormation resources,
#      such as E3004 circular dependencies (cfn-lint skips AWS::Serverless::* resources
#      there) and E3601 on the definition; plus a check that the ${...} names of the
#      definition and the template's DefinitionSubstitutions are the same set
#      and that the sealing key reaches only the API, import, export and webhook functions
#   5. asl-validator --json-path statemachine/*.asl.json
#      (it accepts the ${...} placeholders as they are, in Resource fields too)
#
# Tools are installed once, only when missing, under target/test-services/:
#   lint-venv/  a Python venv with cfn-lint and aws-sam-cli
#   node/       asl-validator (npm; the prefix tests/services.sh also uses for azurite)
# The venv is kept apart from tests/services.sh's venv/: aws-sam-cli pins older
# boto3/botocore/pydantic/click than moto's, and that venv runs the moto server the tests
# talk to. RC_LINT_VENV overrides the location.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=$ROOT/target/test-services
VENV=${RC_LINT_VENV:-$STATE/lint-venv}
NODE_PREFIX=$STATE/node
ASL_VALIDATOR=$NODE_PREFIX/node_modules/.bin/asl-validator

log() { printf '[lint] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cd "$ROOT"
[ -f template.yaml ] || die "missing $ROOT/template.yaml"
[ -f statemachine/job.asl.json ] || die "missing $ROOT/statemachine/job.asl.json"

# --- tools ---------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/cfn-lint" ] || [ ! -x "$VENV/bin/sam" ]; then
  command -v python3 >/dev/null || die "python3 is needed"
  if [ ! -x "$VENV/bin/python" ]; then
    log "python3 -m venv $VENV"
    python3 -m venv "$VENV"
  fi
  log "pip install cfn-lint aws-sam-cli into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check cfn-lint aws-sam-cli >&2
  [ -x "$VENV/bin/cfn-lint" ] && [ -x "$VENV/bin/sam" ] || die "cfn-lint or sam missing after pip install"
fi
if [ ! -x "$ASL_VALIDATOR" ]; then
  command -v npm >/dev/null || die "npm is needed (apt-get install npm)"
  log "npm install asl-validator into $NODE_PREFIX"
  mkdir -p "$NODE_PREFIX"
  npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --no-update-notifier \
    --loglevel=error asl-validator >&2
  [ -x "$ASL_VALIDATOR" ] || die "asl-validator missing after npm install"
fi

# --- offline environment -------------------------------------------------------------------
# Fake credentials and a fixed region: nothing below calls AWS (sam validate builds a boto3
# session on the way, and would ask IAM only for AWS managed policies named by name; step 4
# refuses those). No telemetry. SAM CLI checks PyPI for a newer release once a week from
# every command, with no switch to turn that off: its state folder is kept here, with the
# last check stamped "now" before each run, so it never becomes due.
export AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN
export AWS_EC2_METADATA_DISABLED=true
export SAM_CLI_TELEMETRY=0
export __SAM_CLI_APP_DIR=$STATE/sam-cli
mkdir -p "$__SAM_CLI_APP_DIR"
"$VENV/bin/python" - "$__SAM_CLI_APP_DIR/metadata.json" <<'PY'
import json, os, sys, time
path = sys.argv[1]
try:
    meta = json.load(open(path, encoding="utf-8"))
except (OSError, ValueError):
    meta = {}
meta["lastVersionCheck"] = time.time()
meta["telemetryEnabled"] = False
json.dump(meta, open(path, "w", encoding="utf-8"), indent=4)
PY

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

version() { "$@" 2>&1 | head -n1; }

# --- 1. cfn-lint ---------------------------------------------------------------------------
log "1/5 $(version "$VENV/bin/cfn-lint" --version): cfn-lint template.yaml"
"$VENV/bin/cfn-lint" template.yaml || die "cfn-lint template.yaml failed"

# --- 2. sam validate --lint ----------------------------------------------------------------
log "2/5 $(version "$VENV/bin/sam" --version): sam validate --lint --region us-east-1"
"$VENV/bin/sam" validate --lint --region us-east-1 || die "sam validate --lint failed"

# --- 3. sam validate (translator) ----------------------------------------------------------
log "3/5 sam validate --region us-east-1"
"$VENV/bin/sam" validate --region us-east-1 || die "sam validate failed"

# --- 4. translated template ----------------------------------------------------------------
log "4/5 SAM-translated template with the definition inlined: cfn-lint + substitution names"
"$VENV/bin/python" - template.yaml "$tmp/translated.json" <<'PY' || die "translation or substitution check failed"
import json, re, sys
from samcli.yamlhelper import yaml_parse
from samcli.lib.translate.sam_template_validator import SamTemplateValidator

class NoManagedPolicies:
    def load(self):
        sys.exit("[lint] the template names an AWS managed policy: its ARN would be looked up in IAM")

src, dst = sys.argv[1], sys.argv[2]
template = yaml_parse(open(src, encoding="utf-8").read())
machines = {
    name: res["Properties"]
    for name, res in template.get("Resources", {}).items()
    if res.get("Type") == "AWS::Serverless::StateMachine"
}
definitions = {}
ok = True
for name, props in machines.items():
    text = open(props["DefinitionUri"], encoding="utf-8").read()
    definitions[name] = json.loads(text)
    used = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", text))
    given = set(props.get("DefinitionSubstitutions", {}))
    for missing in sorted(used - given):
        print(f"[lint] {name}: ${{{missing}}} in {props['DefinitionUri']} has no DefinitionSubstitutions entry", file=sys.stderr)
        ok = False
    for unused in sorted(given - used):
        print(f"[lint] {name}: DefinitionSubstitutions.{unused} is not used in {props['DefinitionUri']}", file=sys.stderr)
        ok = False
# Least privilege: the sealing key (its SSM parameter's name and the right to read it)
# reaches only the functions that open credentials or webhook secrets or sign links.
KEYED = {"ApiFunction", "ImportFunction", "ExportFunction", "WebhookFunction"}
if any(k.startswith("SEALING_KEY") for k in template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})):
    print("[lint] Globals give every function the sealing key", file=sys.stderr)
    ok = False
for name, res in template.get("Resources", {}).items():
    if res.get("Type") != "AWS::Serverless::Function":
        continue
    props = res["Properties"]
    has_env = "SEALING_KEY_PARAMETER" in props.get("Environment", {}).get("Variables", {})
    has_policy = any(isinstance(p, dict) and "SSMParameterReadPolicy" in p for p in props.get("Policies", []))
    if (has_env or has_policy) != (name in KEYED) or has_env != has_policy:
        print(f"[lint] {name}: sealing key env {has_env}, SSM read policy {has_policy}; only {sorted(KEYED)} get both", file=sys.stderr)
        ok = False
if not ok:
    sys.exit(1)

translated = yaml_parse(
    SamTemplateValidator(template, NoManagedPolicies(), region="us-east-1").get_translated_template_if_valid()
)
for name, definition in definitions.items():
    props = translated["Resources"][name]["Properties"]
    props.pop("DefinitionS3Location", None)
    props["Definition"] = definition
json.dump(translated, open(dst, "w", encoding="utf-8"), indent=1)
PY
# W3037 (unknown IAM action) is ignored here only: SAM's own SQSPollerPolicy template grants
# sqs:ChangeMessageVisibilityBatch and sqs:DeleteMessageBatch, which IAM does not list (the
# batch calls are authorized by the single-message actions). Step 1 checks template.yaml
# with every rule.
"$VENV/bin/cfn-lint" --ignore-checks W3037 -- "$tmp/translated.json" \
  || die "cfn-lint on the translated template failed"

# --- 5. asl-validator ----------------------------------------------------------------------
asl_version=$(node -p "require('$NODE_PREFIX/node_modules/asl-validator/package.json').version")
for definition in statemachine/*.asl.json; do
  log "5/5 asl-validator $asl_version: asl-validator --json-path $definition"
  "$ASL_VALIDATOR" --json-path "$definition" || die "asl-validator $definition failed"
done

log "all passed"
