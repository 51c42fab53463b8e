#!/bin/bash
# Start or stop a local plain-HTTP registry (Debian's docker-registry, CNCF
# distribution 2.8) on 127.0.0.1 for the demo and for manual testing.
#
#   registry.sh start [PORT]    default PORT 5000; already running -> ok
#   registry.sh stop  [PORT]
#   registry.sh status [PORT]
#
# Storage, config, log and pidfile live in $KILN_REGISTRY_DIR (default
# /var/tmp/kiln-registry-PORT). Deletion is enabled. Listens on 127.0.0.1 only.
set -euo pipefail
die() { echo "registry: ERROR: $*" >&2; exit 1; }
CMD=${1:-}; PORT=${2:-5000}
[[ $PORT =~ ^[0-9]+$ ]] || die "bad port $PORT"
DIR=${KILN_REGISTRY_DIR:-/var/tmp/kiln-registry-$PORT}
PIDFILE=$DIR/registry.pid
BIN=${DOCKER_REGISTRY:-/usr/bin/docker-registry}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
v2_status() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/v2/" 2>/dev/null || true
}

case $CMD in
  start)
    [ -x "$BIN" ] || die "$BIN not found: run scripts/setup.sh"
    command -v curl >/dev/null || die "curl not found: run scripts/setup.sh"
    if running && [ "$(v2_status)" = 200 ]; then
      echo "registry: already running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"), storage $DIR/storage)"
      exit 0
    fi
    code=$(v2_status)
    if [ "$code" != "000" ] && [ -n "$code" ]; then
      die "something else answers on 127.0.0.1:$PORT (HTTP $code); stop it or pick another port"
    fi
    mkdir -p "$DIR/storage"
    cat >"$DIR/config.yml" <<YML
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $DIR/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$PORT
  headers:
    X-Content-Type-Options: [nosniff]
YML
    echo "registry: starting $BIN serve $DIR/config.yml (127.0.0.1:$PORT, log $DIR/registry.log)"
    setsid "$BIN" serve "$DIR/config.yml" >>"$DIR/registry.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 100); do
      [ "$(v2_status)" = 200 ] && { echo "registry: up on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; exit 0; }
      running || { tail -20 "$DIR/registry.log" >&2; die "registry exited during start"; }
      sleep 0.1
    done
    tail -20 "$DIR/registry.log" >&2
    die "registry did not answer GET /v2/ with 200 within 10 s"
    ;;
  stop)
    if running; then
      pid=$(cat "$PIDFILE")
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      echo "registry: stopped (pid $pid)"
    else
      echo "registry: not running on port $PORT"
    fi
    rm -f "$PIDFILE"
    ;;
  status)
    if running; then echo "registry: running (pid $(cat "$PIDFILE")), GET /v2/ -> $(v2_status)"; else echo "registry: not running"; exit 1; fi
    ;;
  *) die "usage: $0 start|stop|status [PORT]" ;;
esac
