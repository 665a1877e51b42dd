#!/usr/bin/env bash
# `sam build` of every zip function of template.yaml, as a user runs it: SAM's
# rust-cargolambda builder runs `cargo lambda build --release --arm64 --bin <Binary>`
# (zig as the cross linker) for each function; then each package's size is printed, the
# bootstrap and the zip SAM would upload. Image functions (the tools image) are built
# only where a container engine answers; elsewhere they are skipped, with a message.
#
#   bash infra/sam-build.sh            (installs SAM CLI, cargo-lambda and zig from PyPI
#                                       and the aarch64 Rust target, once)
#
# Output lines: `SIZE <Function> <bootstrap bytes> <zipped bytes>`; exit status 1 when a
# package is over the 10 MB target (zipped).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=$ROOT/target/test-services
VENV=${RC_LINT_VENV:-$STATE/lint-venv}
log() { printf '[sam-build] %s\n' "$*" >&2; }

[ -x "$VENV/bin/sam" ] || bash infra/lint.sh >&2
if [ ! -x "$VENV/bin/cargo-lambda" ] || ! "$VENV/bin/python" -c 'import ziglang' 2>/dev/null; then
  log "pip install cargo-lambda ziglang into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check cargo-lambda ziglang >&2
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu >&2

export PATH=$VENV/bin:$PATH
export SAM_CLI_TELEMETRY=0 __SAM_CLI_APP_DIR=$STATE/sam-cli
# SAM's Rust builder is a beta feature.
export SAM_CLI_BETA_RUST_CARGO_LAMBDA=1
BUILD=$ROOT/target/sam-build

# Zip functions: those with a BuildMethod; image functions: PackageType Image.
mapfile -t ZIPS < <("$VENV/bin/python" - <<'PY'
import yaml
class L(yaml.SafeLoader): pass
L.add_multi_constructor("!", lambda l, s, n: None)
t = yaml.load(open("template.yaml"), Loader=L)
for k, r in t["Resources"].items():
    if r["Type"] == "AWS::Serverless::Function" and r.get("Metadata", {}).get("BuildMethod") == "rust-cargolambda":
        print(k)
PY
)
t0=$SECONDS
log "sam build ${ZIPS[*]}"
# One build directory per function: `sam build <Function>` empties the one it is given.
for fn in "${ZIPS[@]}"; do
  sam build --beta-features --build-dir "$BUILD/$fn" --cached --cache-dir "$ROOT/target/sam-cache" "$fn" >&2
done
log "zip functions built in $((SECONDS - t0)) s"
if docker info >/dev/null 2>&1; then
  sam build --beta-features --build-dir "$BUILD/all" >&2
else
  log "no container engine answers (docker info): the image functions (infra/worker.Dockerfile) are not built here"
fi

status=0
for fn in "${ZIPS[@]}"; do
  f=$BUILD/$fn/$fn/bootstrap
  [ -f "$f" ] || { log "$fn: no bootstrap in $BUILD/$fn/$fn"; status=1; continue; }
  zipped=$("$VENV/bin/python" -c '
import io, sys, zipfile
b = io.BytesIO()
with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
    z.write(sys.argv[1], "bootstrap")
print(len(b.getvalue()))' "$f")
  echo "SIZE $fn $(stat -c %s "$f") $zipped"
  [ "$zipped" -le 10000000 ] || status=1
done
exit $status
