# Shared by the end-to-end scripts: a temp dir, a server to clean up, and
# check/expect helpers. Source after setting SY (the binary) and ROOT.
# shellcheck shell=bash

TMP=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-cli-test.XXXXXX")
SERVER_PID=
cleanup() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

CHECKS=0
check() {
  CHECKS=$((CHECKS + 1))
  echo "check: $*"
}
fail() {
  echo "FAILED: $*" >&2
  if [[ -f $TMP/server.log ]]; then
    echo "--- server log (last 30 lines) ---" >&2
    tail -n 30 "$TMP/server.log" >&2
  fi
  exit 1
}
# expect_exit CODE COMMAND...: runs COMMAND with output in $TMP/out, $TMP/err.
expect_exit() {
  local want=$1
  shift
  local got=0
  "$@" >"$TMP/out" 2>"$TMP/err" || got=$?
  if [[ $got -ne $want ]]; then
    echo "--- stdout ---" >&2
    cat "$TMP/out" >&2
    echo "--- stderr ---" >&2
    cat "$TMP/err" >&2
    fail "expected exit $want, got $got: $*"
  fi
}
# expect_in FILE TEXT: FILE contains TEXT (fixed string).
expect_in() {
  grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "expected '$2' in $(basename "$1")"; }
}
is_json() {
  python3 -c 'import json,sys; json.load(sys.stdin)' <"$1" || fail "$(basename "$1") is not JSON"
}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_serve "PROBE WORDS" [serve flags...]: `switchyard serve` on fresh ports
# over $DATA_DIR, logging to $TMP/server.log, until `switchyard PROBE WORDS`
# answers. Sets SERVER (a --server flag), MPORT and SERVER_PID.
start_serve() {
  local probe=$1
  shift
  local port mport
  port=$(free_port)
  mport=$(free_port)
  while [[ $mport -eq $port ]]; do mport=$(free_port); done
  SERVER="--server=127.0.0.1:$port"
  MPORT=$mport
  "$SY" serve --grpc-listen="127.0.0.1:$port" --metrics-listen="127.0.0.1:$mport" \
    --data-dir="$DATA_DIR" "$@" >>"$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    # shellcheck disable=SC2086  # the probe is words
    if "$SY" $probe "$SERVER" >/dev/null 2>&1; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || fail "server exited during start"
    sleep 0.1
  done
  fail "server not ready after 10 s"
}

# json_field FILE PYTHON_EXPR: evaluates EXPR with `d` bound to FILE's JSON and,
# for a search response, `hits` to the first query's hits (proto3 JSON omits an
# empty list).
json_field() {
  python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
hits=(d.get("results") or [{}])[0].get("hits", []) if isinstance(d, dict) else []
print(eval(sys.argv[2]))' "$1" "$2"
}
