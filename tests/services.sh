#!/usr/bin/env bash
# The real storage servers that the connector tests talk to, all on 127.0.0.1:
#   moto (S3 for the connector tests)                port $RC_MOTO_PORT    (27001)
#     (the AWS deployment's tests start a moto of their own: infra/local/stack.py)
#   Azurite, blob service only (Azure Blob Storage)  port $RC_AZURITE_PORT (27002)
#   tests/support/gcs_emulator.py (GCS XML API)      port $RC_GCS_PORT     (27003)
#   OpenSSH sshd (SFTP)                              port $RC_SSHD_PORT    (27022)
# It also installs (nothing to start) the Python clients the tests drive into the same
# venv: Playwright (tests/browser.rs, on Debian's Chromium) and CloudConvert's official
# SDK (tests/cloudconvert.rs); and, in a venv and npm tree of their own, the OpenAPI checks
# (schemathesis, openapi-spec-validator, Redocly's CLI: tests/openapi.rs).
#
#   bash tests/services.sh install [service...]   install what is missing, start nothing
#   bash tests/services.sh start    install what is missing (apt-get, a pip venv, npm), start
#                                   whatever is not already running and answering, create the
#                                   buckets rc-in and rc-out in each store, print the env
#   bash tests/services.sh stop     stop every server started here (safe when none runs)
#   (service names after start/stop/status narrow them: `start moto`)
#   bash tests/services.sh env      print the `export` lines the tests read
#   bash tests/services.sh status   say which servers run and answer
#
# Everything lives under target/test-services/ (venv, node_modules, keys, data, logs, pids);
# the env lines are also written to target/test-services/env.sh. Debian, as root (or sudo).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=$ROOT/target/test-services
MOTO_PORT=${RC_MOTO_PORT:-27001}
AZURITE_PORT=${RC_AZURITE_PORT:-27002}
GCS_PORT=${RC_GCS_PORT:-27003}
SSHD_PORT=${RC_SSHD_PORT:-27022}
TIMEOUT=${RC_SERVICES_TIMEOUT:-60}     # seconds each server gets to answer
AZURITE_VERSION=3.35.0                 # the last release whose engines allow Debian 12's Node 18
AZURE_ACCOUNT=devstoreaccount1
AZURE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
SFTP_USER=rcsftp
SFTP_PASSWORD=rcsftp-pw
BUCKETS=(rc-in rc-out)
GCS_EMULATOR=$ROOT/tests/support/gcs_emulator.py
SSHD_DIR=$STATE/sshd

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- processes -----------------------------------------------------------------------------
pidfile() { echo "$STATE/pids/$1.pid"; }
logfile() { echo "$STATE/logs/$1.log"; }

# 0 when process $1 exists and is not a zombie (an exited child that its new parent, the
# init process, has not reaped yet).
alive() {
  local stat
  IFS= read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  [[ ${stat##*) } != Z* ]]
}

# The pid recorded for service $1, when that process is alive.
live_pid() {
  local f pid
  f=$(pidfile "$1")
  [ -s "$f" ] || return 1
  pid=$(<"$f")
  alive "$pid" || return 1
  echo "$pid"
}

# Start "$@" in the background as service $1, in a session (and process group) of its own
# so that stop can signal it with its children; output goes to its log file.
launch() {
  local name=$1 pf lf
  shift
  pf=$(pidfile "$name")
  lf=$(logfile "$name")
  mkdir -p "$STATE/pids" "$STATE/logs"
  rm -f "$pf"
  # shellcheck disable=SC2016  # $$ and $@ are for the inner shell
  setsid bash -c 'echo $$ >"$0"; exec nohup "$@"' "$pf" "$@" >"$lf" 2>&1 </dev/null &
  for _ in $(seq 50); do
    [ -s "$pf" ] && return 0
    sleep 0.1
  done
  die "$name: no pid after 5 s"
}

# Wait until `$2...` succeeds, up to $TIMEOUT seconds; on failure print service $1's log.
wait_for() {
  local name=$1 deadline=$((SECONDS + TIMEOUT))
  shift
  until "$@" >/dev/null 2>&1; do
    if ! live_pid "$name" >/dev/null; then
      log "$name exited; its log ($(logfile "$name")):"
      tail -n 50 "$(logfile "$name")" >&2 || true
      die "$name did not start"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "$name did not answer within $TIMEOUT s; its log ($(logfile "$name")):"
      tail -n 50 "$(logfile "$name")" >&2 || true
      die "$name did not start"
    fi
    sleep 0.2
  done
}

# Every descendant of pid $1 (from /proc; children that left the process group too).
descendants() {
  local p stat rest ppid queue=("$1") cur
  declare -A kids=()
  for p in /proc/[0-9]*; do
    IFS= read -r stat 2>/dev/null <"$p/stat" || continue
    rest=${stat##*) }
    read -r _ ppid _ <<<"$rest"
    kids[$ppid]+=" ${p#/proc/}"
  done
  while [ ${#queue[@]} -gt 0 ]; do
    cur=${queue[0]}
    queue=("${queue[@]:1}")
    for p in ${kids[$cur]:-}; do
      echo "$p"
      queue+=("$p")
    done
  done
}

# Pids of processes whose executable matches the pattern $1 and whose command line (its
# arguments joined by spaces) contains " $2 ": a server of ours whose pid file is gone (say,
# `cargo clean` removed target/). sshd rewrites its command line to a title
# ("sshd: /usr/sbin/sshd -D ... [listener] ..."), which still contains the original.
strays() {
  local exe_pattern=$1 needle=" $2 " p arg cmdline
  for p in /proc/[0-9]*; do
    cmdline=' '
    while IFS= read -r -d '' arg; do cmdline+="$arg "; done 2>/dev/null <"$p/cmdline" || continue
    [[ $cmdline == *"$needle"* ]] || continue
    # shellcheck disable=SC2053  # $exe_pattern is a pattern
    [[ $(readlink "$p/exe" 2>/dev/null) == $exe_pattern ]] || continue
    echo "${p#/proc/}"
  done
}

# The strays of service $1, with their descendants.
service_strays() {
  local p
  for p in $(
    case $1 in
      moto) strays '*/python*' "$STATE/venv/bin/moto_server" ;;
      azurite) strays '*/node*' "$STATE/node/node_modules/.bin/azurite-blob" ;;
      gcs) strays '*/python*' "$GCS_EMULATOR" ;;
      sshd) strays /usr/sbin/sshd "/usr/sbin/sshd -D -e -f $SSHD_DIR/sshd_config" ;;
    esac
  ); do
    echo "$p"
    descendants "$p"
  done
}

# Stop service $1: TERM to its process group and descendants, KILL after 10 s.
stop_service() {
  local name=$1 pid='' pids=() left=() p
  pid=$(live_pid "$name") || true
  mapfile -t pids < <({
    if [ -n "$pid" ]; then echo "$pid"; descendants "$pid"; fi
    service_strays "$name"
  } | sort -un)
  rm -f "$(pidfile "$name")"
  [ ${#pids[@]} -gt 0 ] || return 0
  if [ -n "$pid" ]; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 100); do
    left=()
    for p in "${pids[@]}"; do
      if alive "$p"; then left+=("$p"); fi
    done
    if [ ${#left[@]} -eq 0 ]; then
      log "stopped $name (pids ${pids[*]})"
      return 0
    fi
    sleep 0.1
  done
  kill -KILL "${left[@]}" 2>/dev/null || true
  log "killed $name (pids ${left[*]}): it ignored TERM for 10 s"
}

# 0 when service $1 was started here, is alive and answers.
running() {
  live_pid "$1" >/dev/null && "check_$1" >/dev/null 2>&1
}

# 0 when a server could listen on 127.0.0.1:$1 now (with SO_REUSEADDR, as the servers do).
bindable() {
  python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}


# Before starting service $1 on port $2: stop a dead or deaf one of ours, refuse a port
# that another program listens on, and wait for one that a closed connection still holds.
prepare_start() {
  local name=$1 port=$2 deadline=$((SECONDS + 70))
  stop_service "$name"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port (for $name) is taken by another program: see \`ss -tanp 'sport = :$port'\`, or choose another port with RC_*_PORT"
  fi
  if ! bindable "$port"; then
    log "port $port (for $name) is held by a connection in TIME_WAIT: waiting up to 70 s"
    until bindable "$port"; do
      [ "$SECONDS" -lt "$deadline" ] || die "port $port (for $name) stayed busy: see \`ss -tanp 'sport = :$port'\`"
      sleep 1
    done
  fi
}

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@"; }

# --- installing ------------------------------------------------------------------------------
apt_updated=false
apt_install() {
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  if ! $apt_updated; then
    "${sudo[@]}" apt-get update -qq
    apt_updated=true
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@" >&2
}

install_system_packages() {
  local pkgs=()
  command -v curl >/dev/null || pkgs+=(curl)
  command -v python3 >/dev/null || pkgs+=(python3)
  # Debian ships venv's pip bootstrap (ensurepip) separately.
  python3 -c 'import ensurepip, venv' 2>/dev/null || pkgs+=(python3-venv)
  command -v node >/dev/null || pkgs+=(nodejs)
  command -v npm >/dev/null || pkgs+=(npm)
  [ -x /usr/sbin/sshd ] || pkgs+=(openssh-server)
  command -v ssh-keygen >/dev/null || pkgs+=(openssh-client)
  # The dashboard's browser tests drive Debian's Chromium.
  command -v chromium >/dev/null || pkgs+=(chromium)
  [ ${#pkgs[@]} -eq 0 ] || apt_install "${pkgs[@]}"
}

# The Python clients the tests drive, pinned: Playwright for Python, the release whose
# bundled Chromium (156) matches the major version of Debian's `chromium` package, which
# the tests launch by path (`executable_path`; `playwright install`, which downloads
# browsers, is never run); and CloudConvert's official SDK (tests/cloudconvert.rs).
PYTHON_CLIENTS=(playwright==1.64.1 cloudconvert==2.1.0)
install_python_clients() { pip_pinned "$STATE/venv" "${PYTHON_CLIENTS[@]}"; }

# The OpenAPI checks (tests/openapi.rs), in a venv of their own (their pins need not agree
# with moto's or Playwright's): schemathesis and openapi-spec-validator.
OPENAPI_TOOLS=(schemathesis==4.32.5 openapi-spec-validator==0.9.0)
install_openapi_tools() { pip_pinned "$STATE/openapi-venv" "${OPENAPI_TOOLS[@]}"; }

# pip_pinned VENV NAME==VERSION...: installs into VENV (made when missing) the pins it lacks.
pip_pinned() {
  local venv=$1 missing=() p
  shift
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  for p in "$@"; do
    "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('${p%%==*}') != '${p##*==}')" 2>/dev/null ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "pip install ${missing[*]} into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${missing[@]}" >&2
}

install_moto() {
  [ -x "$STATE/venv/bin/moto_server" ] && return 0
  local t0=$SECONDS
  [ -x "$STATE/venv/bin/python" ] || python3 -m venv "$STATE/venv"
  log "pip install moto[server] into $STATE/venv"
  "$STATE/venv/bin/pip" install -q --disable-pip-version-check 'moto[server]' >&2
  log "moto installed in $((SECONDS - t0)) s"
}

# CloudConvert's official Node SDK (tests/cloudconvert.rs) and Redocly's CLI (its OpenAPI
# lint, tests/openapi.rs), in a tree of their own.
NODE_CLIENTS=(cloudconvert@3.0.0 @redocly/cli@2.77.0)
install_node_clients() {
  local dir=$STATE/node-clients missing=() p
  for p in "${NODE_CLIENTS[@]}"; do
    grep -qs "\"version\": *\"${p##*@}\"" "$dir/node_modules/${p%@*}/package.json" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  mkdir -p "$dir"
  log "npm install ${missing[*]} into $dir"
  npm install --prefix "$dir" --no-audit --no-fund --no-update-notifier --loglevel=error "${missing[@]}" >&2
}

install_azurite() {
  local pkg=$STATE/node/node_modules/azurite/package.json
  if [ -x "$STATE/node/node_modules/.bin/azurite-blob" ] && [ -f "$pkg" ] &&
    grep -q "\"version\": *\"$AZURITE_VERSION\"" "$pkg"; then
    return 0
  fi
  local t0=$SECONDS
  mkdir -p "$STATE/node"
  log "npm install azurite@$AZURITE_VERSION into $STATE/node"
  npm install --prefix "$STATE/node" --no-audit --no-fund --no-update-notifier \
    --loglevel=error "azurite@$AZURITE_VERSION" >&2
  log "azurite installed in $((SECONDS - t0)) s"
}

# --- moto --------------------------------------------------------------------------------------
check_moto() { [ "$(http_code "http://127.0.0.1:$MOTO_PORT/")" = 200 ]; }

start_moto() {
  if running moto; then log "moto already runs on $MOTO_PORT"; else
    install_moto
    prepare_start moto "$MOTO_PORT"
    launch moto "$STATE/venv/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
    wait_for moto check_moto
    log "moto runs on 127.0.0.1:$MOTO_PORT"
  fi
  local b code
  for b in "${BUCKETS[@]}"; do
    [ "$(http_code -I "http://127.0.0.1:$MOTO_PORT/$b")" = 200 ] && continue
    code=$(http_code -X PUT "http://127.0.0.1:$MOTO_PORT/$b")
    [ "$code" = 200 ] || die "moto: creating bucket $b answered $code"
  done
}

# --- Azurite -----------------------------------------------------------------------------------
# Any HTTP answer will do (it answers 400 to an unsigned GET /).
check_azurite() { [ "$(http_code "http://127.0.0.1:$AZURITE_PORT/")" != 000 ]; }

# Create container $1 in the emulator's account (409 ContainerAlreadyExists is fine), then
# list its blobs to check that it is there: SharedKey-signed requests, Python stdlib only.
azure_container() {
  python3 - "$AZURITE_PORT" "$AZURE_ACCOUNT" "$AZURE_KEY" "$1" <<'PY'
import base64, hashlib, hmac, http.client, sys
from email.utils import formatdate

port, account, key, container = sys.argv[1:5]

def call(method, query):
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2021-08-06"}
    canon_headers = "".join("%s:%s\n" % kv for kv in sorted(headers.items()))
    path = "/%s/%s" % (account, container)  # path-style URL: the account comes first
    canon_resource = "/" + account + path + "".join("\n%s:%s" % kv for kv in sorted(query.items()))
    # VERB, then 11 standard headers (all empty here; Content-Length 0 counts as empty).
    to_sign = "\n".join([method] + [""] * 11) + "\n" + canon_headers + canon_resource
    mac = hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()
    headers["Authorization"] = "SharedKey %s:%s" % (account, base64.b64encode(mac).decode())
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
    conn.request(method, path + "?" + "&".join("%s=%s" % kv for kv in query.items()), body=b"",
                 headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.getheader("x-ms-error-code"), resp.read()

status, code, body = call("PUT", {"restype": "container"})
if status != 201 and code != "ContainerAlreadyExists":
    sys.exit("create container %s: %s %s %s" % (container, status, code, body[:300]))
status, code, body = call("GET", {"restype": "container", "comp": "list"})
if status != 200 or b"<EnumerationResults" not in body:
    sys.exit("list blobs in %s: %s %s %s" % (container, status, code, body[:300]))
PY
}

start_azurite() {
  if running azurite; then log "azurite already runs on $AZURITE_PORT"; else
    install_azurite
    prepare_start azurite "$AZURITE_PORT"
    mkdir -p "$STATE/azurite"
    launch azurite "$STATE/node/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 \
      --blobPort "$AZURITE_PORT" --location "$STATE/azurite" --silent --skipApiVersionCheck \
      --loose --disableTelemetry
    wait_for azurite check_azurite
    log "azurite runs on 127.0.0.1:$AZURITE_PORT"
  fi
  local c
  for c in "${BUCKETS[@]}"; do azure_container "$c" || die "azurite: container $c"; done
}

# --- GCS emulator ------------------------------------------------------------------------------
check_gcs() { [ "$(http_code "http://127.0.0.1:$GCS_PORT/")" = 200 ]; }

start_gcs() {
  if running gcs; then log "gcs emulator already runs on $GCS_PORT"; else
    prepare_start gcs "$GCS_PORT"
    launch gcs python3 "$GCS_EMULATOR" --host 127.0.0.1 --port "$GCS_PORT"
    wait_for gcs check_gcs
    log "gcs emulator runs on 127.0.0.1:$GCS_PORT"
  fi
  local b code
  for b in "${BUCKETS[@]}"; do
    code=$(http_code -X POST -H 'Content-Type: application/json' -d "{\"name\":\"$b\"}" \
      "http://127.0.0.1:$GCS_PORT/storage/v1/b")
    case $code in 200 | 409) ;; *) die "gcs emulator: creating bucket $b answered $code" ;; esac
  done
}

# --- sshd --------------------------------------------------------------------------------------
# The SSH banner, not just an open port.
check_sshd() (
  exec 3<>"/dev/tcp/127.0.0.1/$SSHD_PORT" || exit 1
  IFS= read -r -t 5 line <&3 || true
  [[ ${line:-} == SSH-* ]]
)

sftp_home() { getent passwd "$SFTP_USER" | cut -d: -f6 || true; }

start_sshd() {
  if running sshd; then log "sshd already runs on $SSHD_PORT"; return 0; fi
  mkdir -p "$SSHD_DIR" /run/sshd
  chmod 755 /run/sshd # sshd's privilege-separation directory
  [ -f "$SSHD_DIR/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C rc-test-host -f "$SSHD_DIR/host_ed25519"
  [ -f "$SSHD_DIR/client_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C rc-test-client -f "$SSHD_DIR/client_ed25519"
  chmod 600 "$SSHD_DIR/host_ed25519" "$SSHD_DIR/client_ed25519"
  install -m 644 "$SSHD_DIR/client_ed25519.pub" "$SSHD_DIR/authorized_keys"
  id "$SFTP_USER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$SFTP_USER"
  echo "$SFTP_USER:$SFTP_PASSWORD" | chpasswd
  # sshd reads an AuthorizedKeysFile as the user, who may not be able to reach target/ (a
  # clone under /root, say); a command run as root can, and keeps the key file here.
  cat >"$SSHD_DIR/sshd_config" <<CONF
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $SSHD_DIR/host_ed25519
PidFile none
AuthorizedKeysFile none
AuthorizedKeysCommand /bin/cat $SSHD_DIR/authorized_keys
AuthorizedKeysCommandUser root
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
AllowUsers $SFTP_USER
Subsystem sftp internal-sftp
LogLevel VERBOSE
CONF
  /usr/sbin/sshd -t -f "$SSHD_DIR/sshd_config"
  prepare_start sshd "$SSHD_PORT"
  # The absolute path is required: sshd re-executes itself.
  launch sshd /usr/sbin/sshd -D -e -f "$SSHD_DIR/sshd_config"
  wait_for sshd check_sshd
  log "sshd runs on 127.0.0.1:$SSHD_PORT (user $SFTP_USER)"
}

# --- env -----------------------------------------------------------------------------------------
print_env() {
  local home
  home=$(sftp_home)
  mkdir -p "$STATE"
  {
    printf "export %s='%s'\n" \
      RUNCONVERT_TEST_S3_ENDPOINT "http://127.0.0.1:$MOTO_PORT" \
      RUNCONVERT_TEST_MOTO_PORT "$MOTO_PORT" \
      RUNCONVERT_TEST_AZURE_ENDPOINT "http://127.0.0.1:$AZURITE_PORT/{account}" \
      RUNCONVERT_TEST_AZURE_ACCOUNT "$AZURE_ACCOUNT" \
      RUNCONVERT_TEST_AZURE_KEY "$AZURE_KEY" \
      RUNCONVERT_TEST_GCS_EMULATOR "http://127.0.0.1:$GCS_PORT" \
      RUNCONVERT_TEST_SFTP_PORT "$SSHD_PORT" \
      RUNCONVERT_TEST_SFTP_USER "$SFTP_USER" \
      RUNCONVERT_TEST_SFTP_PASSWORD "$SFTP_PASSWORD" \
      RUNCONVERT_TEST_SFTP_KEY "$SSHD_DIR/client_ed25519" \
      RUNCONVERT_TEST_SFTP_HOME "${home:-/home/$SFTP_USER}" \
      RC_TEST_PYTHON "$STATE/venv/bin/python" \
      RC_TEST_NODE_PATH "$STATE/node-clients/node_modules" \
      RC_SCHEMATHESIS "$STATE/openapi-venv/bin/schemathesis" \
      RC_SPEC_VALIDATOR "$STATE/openapi-venv/bin/openapi-spec-validator" \
      RC_REDOCLY "$STATE/node-clients/node_modules/.bin/redocly" \
      RC_CHROMIUM "$(command -v chromium || echo /usr/bin/chromium)"
  } | tee "$STATE/env.sh"
}

SERVICES=(moto azurite gcs sshd)

# Optional service names after the command narrow it (e.g. `start moto`).
cmd=${1:-}
shift || true
if [ $# -gt 0 ]; then
  for s in "$@"; do
    case " ${SERVICES[*]} " in *" $s "*) ;; *) die "unknown service $s (${SERVICES[*]})" ;; esac
  done
  SERVICES=("$@")
fi

case "$cmd" in
  start)
    mkdir -p "$STATE"
    install_system_packages
    install_python_clients
    install_node_clients
    install_openapi_tools
    for s in "${SERVICES[@]}"; do "start_$s"; done
    print_env
    ;;
  install)
    mkdir -p "$STATE"
    install_system_packages
    install_python_clients
    install_node_clients
    install_openapi_tools
    for s in "${SERVICES[@]}"; do
      if declare -F "install_$s" >/dev/null; then "install_$s"; fi
    done
    ;;
  stop)
    for s in "${SERVICES[@]}"; do stop_service "$s"; done
    ;;
  env)
    print_env
    ;;
  status)
    rc=0
    for s in "${SERVICES[@]}"; do
      if running "$s"; then log "$s: runs (pid $(live_pid "$s"))"; else log "$s: not running"; rc=1; fi
    done
    exit $rc
    ;;
  *)
    echo "usage: bash tests/services.sh install|start|stop|env|status [service...]" >&2
    exit 2
    ;;
esac
