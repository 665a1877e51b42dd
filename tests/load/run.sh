#!/usr/bin/env bash
# Load test of the embedded server (`runconvert serve`) on loopback, bounded in time.
#
#   bash tests/load/run.sh
#
# It starts a server on a fresh data directory (target/load/run.XXXXXX, kept afterwards with
# the server's log), creates an API key, then runs wrk for DURATION with CONNECTIONS
# connections, every request creating a small job (tests/load/create_job.lua:
# import/base64 → export/url). It prints wrk's latency percentiles, requests/s and the
# responses per status class; then it waits until the server has finished every job and
# checks that each job answered 201 is stored (none lost) and that none failed.
# Last line:
#   LOAD: <conns> clients, <jobs/s> jobs/s created, p50 <ms>, p99 <ms>, 5xx <n>, lost <n>, failed <n>, stuck <n>
# Exit status non-zero on any 5xx, lost, failed or stuck job (or no job created at all).
# (stuck: stored but never started, still `created` while the server has nothing to do.)
#
# Environment:
#   RUNCONVERT_BIN   the server binary (default target/release/runconvert, built with
#                    `cargo build --release -p runconvert` when missing)
#   CONNECTIONS      wrk connections (default 200)         DURATION   wrk -d (default 20s)
#   THREADS          wrk threads (default 2)               CONCURRENCY  serve --concurrency (2)
#   WRK_TIMEOUT      wrk --timeout (default 30s): a slower response leaves wrk's latency
#                    histogram, so a short one would hide the slow tail
#   DRAIN_TIMEOUT    seconds to wait for the server to finish the jobs (default 600)
#   STUCK_GRACE      seconds a job may stay `created` with nothing processing (default 30)
#   RATE_LIMIT       the load key's requests a minute, on builds with rate limits (default
#                    0: unlimited; with a limit, 429s are expected and not a failure)
# Installs wrk, curl and jq with apt-get when missing (Debian; root or sudo).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

CONNECTIONS=${CONNECTIONS:-200}
DURATION=${DURATION:-20s}
THREADS=${THREADS:-2}
[ "$THREADS" -le "$CONNECTIONS" ] || THREADS=$CONNECTIONS   # wrk wants connections >= threads
CONCURRENCY=${CONCURRENCY:-2}
WRK_TIMEOUT=${WRK_TIMEOUT:-30s}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-600}
BIN=${RUNCONVERT_BIN:-target/release/runconvert}
LUA=$root/tests/load/create_job.lua

log() { printf '[load] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools ------------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x "$BIN" ]; then
  if [ -z "${RUNCONVERT_BIN:-}" ]; then
    log "building $BIN"
    cargo build --release -q -p runconvert
  else
    die "RUNCONVERT_BIN=$BIN is not an executable file"
  fi
fi
case $BIN in /*) ;; *) BIN=$root/$BIN ;; esac

# Every connection is a descriptor in wrk and one in the server, plus the server's own
# (database, job files): raise the soft limit as far as the hard one allows.
want_fds=$((CONNECTIONS * 2 + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want_fds" ]; then
  hard=$(ulimit -Hn)
  if [ "$hard" = unlimited ] || [ "$hard" -ge "$want_fds" ]; then
    ulimit -n "$want_fds"
  else
    ulimit -n "$hard"
    log "warning: open-files limit is $hard (hard), below the $want_fds that $CONNECTIONS connections want"
  fi
fi

# --- server -----------------------------------------------------------------------
mkdir -p "$root/target/load"
DATA=$(mktemp -d "$root/target/load/run.XXXXXX")
SERVER_LOG=$DATA/server.log
server_pid=""

stop_server() {
  [ -n "$server_pid" ] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$server_pid" 2>/dev/null; then
      log "server did not stop on SIGTERM in 10 s: killing it"
      kill -KILL "$server_pid" 2>/dev/null || true
    fi
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

server_tail() {
  log "last lines of $SERVER_LOG:"
  tail -n 20 "$SERVER_LOG" >&2 || true
  local errors
  errors=$(grep -cE ' (ERROR|WARN) ' "$SERVER_LOG" || true)
  if [ "${errors:-0}" -gt 0 ]; then
    log "$errors ERROR/WARN lines in the server log; the last ones:"
    grep -E ' (ERROR|WARN) ' "$SERVER_LOG" | tail -n 20 >&2 || true
  fi
}

# Builds with per-key rate limits (default 1200 requests a minute) would answer mostly 429:
# the load key gets RATE_LIMIT (default 0, unlimited) when the binary knows --rate-limit.
key_args=(--name load --data-dir "$DATA")
if "$BIN" keys create --help 2>/dev/null | grep -q -- '--rate-limit'; then
  key_args+=(--rate-limit "${RATE_LIMIT:-0}")
fi
KEY=$("$BIN" keys create "${key_args[@]}" 2>>"$SERVER_LOG")
[ -n "$KEY" ] || die "keys create printed no key"

log "data dir $DATA; starting $BIN serve (concurrency $CONCURRENCY)"
# wrk is one address with many connections: no per-address cap.
NO_COLOR=1 "$BIN" serve --listen 127.0.0.1:0 --data-dir "$DATA" --concurrency "$CONCURRENCY" \
  --max-connections-per-ip 0 \
  >"$DATA/server.out" 2>"$SERVER_LOG" &
server_pid=$!

URL=""
for _ in $(seq 1 300); do
  URL=$(sed -n 's/^RunConvert listening on \(http:\/\/[^ ]*\).*/\1/p' "$DATA/server.out" | head -n 1)
  [ -n "$URL" ] && break
  kill -0 "$server_pid" 2>/dev/null || { server_tail; die "the server exited before listening"; }
  sleep 0.1
done
[ -n "$URL" ] || { server_tail; die "no 'RunConvert listening on' line in 30 s"; }

for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/healthz" || true)" = 200 ] && break
  sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/healthz" || true)" = 200 ] || { server_tail; die "GET /healthz is not 200"; }
log "server up at $URL (pid $server_pid)"

# job_count QUERY → meta.count of GET /v2/process/jobs?QUERY (retried for a minute: a
# rate-limited key may answer 429 for a while after the load)
job_count() {
  local n
  for _ in $(seq 1 60); do
    if n=$(curl -sS -f -H "Authorization: Bearer $KEY" "$URL/v2/process/jobs?$1" 2>/dev/null |
      jq -e '.meta.count' 2>/dev/null); then
      echo "$n"
      return 0
    fi
    sleep 1
  done
  die "GET /v2/process/jobs?$1 keeps failing"
}

# --- load -------------------------------------------------------------------------
log "wrk: $THREADS threads, $CONNECTIONS connections, $DURATION, POST $URL/v2/process/jobs"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout "$WRK_TIMEOUT" --latency \
  -H "Authorization: Bearer $KEY" -s "$LUA" "$URL/v2/process/jobs" | tee "$DATA/wrk.out" ||
  die "wrk failed (see above)"

stats=$(grep '^LOADSTATS ' "$DATA/wrk.out" | tail -n 1)
[ -n "$stats" ] || { server_tail; die "wrk printed no LOADSTATS line (see $DATA/wrk.out)"; }
stat() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$stats"; }
sent=$(stat sent); responses=$(stat responses); s201=$(stat s201); s429=$(stat s429)
s4xx=$(stat s4xx); s5xx=$(stat s5xx); secs=$(stat secs); p50=$(stat p50); p99=$(stat p99)
sock_errors=$(($(stat connect) + $(stat read) + $(stat write)))
unanswered=$((sent - responses))
jobs_per_s=$(awk -v n="$s201" -v s="$secs" 'BEGIN { printf "%.1f", (s > 0 ? n / s : 0) }')

kill -0 "$server_pid" 2>/dev/null || { server_tail; die "the server died during the load"; }

# --- drain and count ----------------------------------------------------------------
# created → processing → completed | failed, and nothing creates jobs any more: once no job
# is `created` and then none is `processing`, all are final. The total must also hold still
# over two polls (a request wrk gave up on may still be finishing in the server).
# A job left `created` while nothing is processing, for STUCK_GRACE seconds, is stuck: it
# was stored but never handed to the executor, and would only run after a restart.
log "waiting for the server to finish its jobs (up to ${DRAIN_TIMEOUT} s)"
t0=$(date +%s)
next_log=$((t0 + 10))
prev_total=-1
prev_created=-1
created_since=$t0
stuck=0
while :; do
  created=$(job_count 'status=created&limit=1')
  processing=$(job_count 'status=processing&limit=1')
  total=$(job_count 'limit=1')
  now=$(date +%s)
  if [ "$created" -eq 0 ] && [ "$processing" -eq 0 ] && [ "$total" -eq "$prev_total" ]; then
    break
  fi
  if [ "$processing" -ne 0 ] || [ "$created" -ne "$prev_created" ] || [ "$total" -ne "$prev_total" ]; then
    created_since=$now
  elif [ $((now - created_since)) -ge "${STUCK_GRACE:-30}" ]; then
    stuck=$created
    log "$stuck jobs still 'created' after $((now - created_since)) s with nothing processing: stuck"
    break
  fi
  prev_total=$total
  prev_created=$created
  if [ $((now - t0)) -ge "$DRAIN_TIMEOUT" ]; then
    server_tail
    die "after $((now - t0)) s, $created jobs still created and $processing processing (of $total)"
  fi
  if [ "$now" -ge "$next_log" ]; then
    log "  $((now - t0))s: $created created, $processing processing, $total in all"
    next_log=$((now + 10))
  fi
  sleep 1
done
drain_secs=$(($(date +%s) - t0))
failed=$(job_count 'status=failed&limit=1')
completed=$(job_count 'status=completed&limit=1')
log "drained in ${drain_secs}s: $total jobs, $completed completed, $failed failed, $stuck stuck"

# A 201 means the job is stored: fewer jobs than 201s is a lost job. More jobs than 201s
# can only come from requests wrk wrote but never saw answered (in flight when it stopped).
lost=0; extra=0
[ "$total" -lt "$s201" ] && lost=$((s201 - total))
[ "$total" -gt "$s201" ] && extra=$((total - s201))
log "201 responses $s201, jobs stored $total, lost $lost, extra $extra (requests unanswered when wrk stopped: $unanswered)"

status=0
[ "$s5xx" -eq 0 ] || { log "FAIL: $s5xx responses 5xx"; status=1; }
[ "$lost" -eq 0 ] || { log "FAIL: $lost jobs answered 201 are not stored"; status=1; }
[ "$failed" -eq 0 ] || { log "FAIL: $failed jobs failed"; status=1; }
[ "$extra" -le "$unanswered" ] || { log "FAIL: $extra jobs stored beyond the 201s, more than the $unanswered unanswered requests"; status=1; }
[ "$s201" -gt 0 ] || { log "FAIL: no job was created"; status=1; }
if [ "$stuck" -gt 0 ]; then
  log "FAIL: $stuck jobs stored but never started (status created); the newest:"
  shown=$(curl -sS -H "Authorization: Bearer $KEY" "$URL/v2/process/jobs?status=created&limit=5" |
    jq -r '.data[] | "\(.id) created_at \(.created_at) tasks \([.tasks[].status] | join(","))"' || true)
  while read -r line; do log "  $line"; done <<<"$shown"
  # Not even a job.created event in the log: the request was dropped (client gone) after
  # the job was stored and before it was published and dispatched.
  in_log=0
  while read -r id _; do
    if [ -n "$id" ] && grep -q "$id" "$SERVER_LOG"; then in_log=$((in_log + 1)); fi
  done <<<"$shown"
  log "of these $(wc -l <<<"$shown"), $in_log appear in the server log"
  status=1
fi
[ "$s429" -eq 0 ] || log "note: $s429 responses 429 (rate limited)"
[ "$s4xx" -eq 0 ] || log "warning: $s4xx other 4xx responses"
[ "$sock_errors" -eq 0 ] || log "warning: $sock_errors socket errors in wrk (connect/read/write)"
if [ "$failed" -gt 0 ]; then
  log "a failed job:"
  curl -sS -H "Authorization: Bearer $KEY" "$URL/v2/process/jobs?status=failed&limit=1" |
    jq -c '.data[0] | {id, status, tasks: [.tasks[] | {name, status, code, message}]}' >&2 || true
fi
[ "$status" -eq 0 ] || server_tail

stop_server
log "server stopped; data dir and logs kept in $DATA"
echo "LOAD: $CONNECTIONS clients, $jobs_per_s jobs/s created, p50 $p50, p99 $p99, 5xx $s5xx, lost $lost, failed $failed, stuck $stuck"
exit "$status"
