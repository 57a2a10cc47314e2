#!/usr/bin/env bash
# A room of hundreds: N `streamlit run app.py` processes on loopback behind HAProxy.
#
#   deploy/run.sh [N] [-- STREAMLIT_ARGS...]     N app processes (default: one per CPU core)
#
# One Streamlit process uses about one core (Python's GIL), so N processes on N cores serve
# N times the page updates a second (benchmarks/README.md, "A room of hundreds"). HAProxy
# (deploy/haproxy.cfg) keeps each browser tab on one process with a cookie, proxies the
# websockets, health-checks every process on /_stcore/health and moves the tabs of a process
# that died to a live one; they get their view back from the URL. A process that exits is
# started again after RESTART_DELAY seconds. Ctrl-C / SIGTERM stops everything.
#
# Settings (environment variables):
#   PORT=8501            the public port (HAProxy)
#   BIND=0.0.0.0         the public address (127.0.0.1: this machine only)
#   APP_PORT_BASE=8601   app process i listens on 127.0.0.1:APP_PORT_BASE+i-1 ...
#   APP_PORTS="p1 p2"    ... or on these ports (overrides N and APP_PORT_BASE)
#   RUN_DIR              logs (app<i>.log, haproxy.log, run.log), pid files (app<i>.pid: the
#                        current streamlit process of slot i), the generated haproxy.cfg and
#                        HAProxy's admin socket (haproxy.sock); default: a new folder from mktemp -d
#   PYTHON=python3       the interpreter that has requirements.txt installed
#   RESTART_DELAY=2      seconds before an exited app process is started again
#   HAPROXY              the haproxy binary (default: from PATH, else /usr/sbin/haproxy)
#   CNN_VIZ_MODEL_UPLOAD=off   (default here: off, for a public host; see README "Host it"),
#   CNN_VIZ_MODEL_MEMORY_GB, CNN_VIZ_OFFLINE, KERAS_HOME: passed to every app process.
#   STREAMLIT_SERVER_COOKIE_SECRET: one secret for all processes (generated when unset), so a
#                        cookie signed by one process is valid in the one a tab moves to.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-$(nproc 2>/dev/null || echo 2)}"
shift || true
[ "${1:-}" = "--" ] && shift
EXTRA=("$@")
case "$N" in ''|*[!0-9]*) echo "usage: deploy/run.sh [N] [-- STREAMLIT_ARGS...]" >&2; exit 2;; esac
[ "$N" -ge 1 ] || { echo "deploy/run.sh: N must be at least 1" >&2; exit 2; }

export PORT="${PORT:-8501}" BIND="${BIND:-0.0.0.0}"
export RUN_DIR="${RUN_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/cnn-viz-deploy.XXXXXX")}"
export CNN_VIZ_MODEL_UPLOAD="${CNN_VIZ_MODEL_UPLOAD:-off}"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
RESTART_DELAY="${RESTART_DELAY:-2}"
if [ -z "${STREAMLIT_SERVER_COOKIE_SECRET:-}" ]; then
  STREAMLIT_SERVER_COOKIE_SECRET="$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')"
fi
export STREAMLIT_SERVER_COOKIE_SECRET
read -r -a PORTS <<< "${APP_PORTS:-}"
if [ "${#PORTS[@]}" -eq 0 ]; then
  base="${APP_PORT_BASE:-8601}"
  for ((i = 0; i < N; i++)); do PORTS+=("$((base + i))"); done
fi
N="${#PORTS[@]}"

# Debian puts haproxy in /usr/sbin, which is not on a normal user's PATH.
HAPROXY="${HAPROXY:-$(command -v haproxy || true)}"
for candidate in /usr/sbin/haproxy /usr/local/sbin/haproxy; do
  [ -z "$HAPROXY" ] && [ -x "$candidate" ] && HAPROXY="$candidate"
done
[ -n "$HAPROXY" ] || {
  echo "deploy/run.sh: haproxy not found: apt-get install haproxy (Debian/Ubuntu), or see deploy/Dockerfile" >&2
  exit 127
}
mkdir -p "$RUN_DIR"

# HAProxy's configuration: deploy/haproxy.cfg + one server line per app process.
CFG="$RUN_DIR/haproxy.cfg"
{
  cat deploy/haproxy.cfg
  for ((i = 1; i <= N; i++)); do
    echo "    server app$i 127.0.0.1:${PORTS[i - 1]} cookie app$i"
  done
} > "$CFG"
"$HAPROXY" -c -q -f "$CFG"

PIDS=()       # supervisors and haproxy: what cleanup stops
cleanup() {
  trap - EXIT INT TERM
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done      # no more restarts
  for ((i = 1; i <= N; i++)); do                                          # the app processes
    [ -f "$RUN_DIR/app$i.pid" ] && kill -TERM "$(cat "$RUN_DIR/app$i.pid")" 2>/dev/null || true
  done
  for _ in $(seq 50); do
    local alive=0
    for ((i = 1; i <= N; i++)); do
      [ -f "$RUN_DIR/app$i.pid" ] && kill -0 "$(cat "$RUN_DIR/app$i.pid")" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.2
  done
  for ((i = 1; i <= N; i++)); do
    [ -f "$RUN_DIR/app$i.pid" ] && kill -KILL "$(cat "$RUN_DIR/app$i.pid")" 2>/dev/null || true
  done
  echo "deploy/run.sh: stopped (logs in $RUN_DIR)" >&2
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# Slot i: start `streamlit run app.py` on its port, again whenever it exits.
supervise() {
  local i="$1" port="$2" code
  trap - EXIT INT TERM
  while :; do
    "$PYTHON" -m streamlit run app.py --server.port "$port" --server.address 127.0.0.1 \
      --server.headless true --browser.gatherUsageStats false "${EXTRA[@]}" \
      >> "$RUN_DIR/app$i.log" 2>&1 < /dev/null &
    echo "$!" > "$RUN_DIR/app$i.pid"
    code=0; wait "$!" || code=$?
    echo "$(date '+%F %T') app$i (port $port) exited with status $code; starting it again in ${RESTART_DELAY} s" \
      >> "$RUN_DIR/run.log"
    sleep "$RESTART_DELAY"
  done
}

for ((i = 1; i <= N; i++)); do
  supervise "$i" "${PORTS[i - 1]}" &
  PIDS+=("$!")
done
"$HAPROXY" -db -f "$CFG" >> "$RUN_DIR/haproxy.log" 2>&1 < /dev/null &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
echo "$HAPROXY_PID" > "$RUN_DIR/haproxy.pid"

# Say when every process answers its health check (in the background: signals stay prompt).
(
  trap - EXIT INT TERM
  "$PYTHON" - "$N" "${PORTS[@]}" <<'PY' || true
import sys, time, urllib.request
n, ports = int(sys.argv[1]), sys.argv[2:]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
deadline, up = time.monotonic() + 300, set()
while len(up) < n and time.monotonic() < deadline:
    for p in ports:
        try:
            with opener.open(f"http://127.0.0.1:{p}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    up.add(p)
        except OSError:
            pass
    time.sleep(0.5)
print(f"deploy/run.sh: {len(up)} of {n} app processes healthy", file=sys.stderr, flush=True)
PY
) &

shown_host="$BIND"; [ "$BIND" = "0.0.0.0" ] && shown_host="$(hostname)"
echo "deploy/run.sh: $N app processes (127.0.0.1:${PORTS[*]}) behind HAProxy at http://$shown_host:$PORT/" >&2
echo "deploy/run.sh: logs, pid files and haproxy.cfg in $RUN_DIR" >&2

code=0; wait "$HAPROXY_PID" || code=$?
echo "deploy/run.sh: haproxy exited with status $code" >&2
exit "$code"
