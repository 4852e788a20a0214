#!/usr/bin/env bash
# End-to-end test of the router as Kubernetes runs it: inference, retrieval
# and dataset each in their own `switchyard serve` process, and
# `serve --target=router --inference-addr ... --retrieval-addr ...` in front,
# all on loopback, each with the flag file its Deployment mounts
# (k8s/base/config/<service>.conf; the command line overrides addresses). The contract: `experiment create --file` with arms
# fine-tuned / RAG / both, `experiment show|list|report`, `chat --json` with
# arm, response_id, text and sources, sticky user keys, `feedback`,
# `compare` on a shadow pair, exports, metrics and a clean drain.
#
#   tests/e2e/router_cli_test.sh <switchyard binary> <repo root>
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <switchyard binary> <repo root>" >&2
  exit 2
fi
SY=$1
ROOT=$2
source "$(dirname "$0")/testlib.sh"

BACKEND_PIDS=()
stop_backends() {
  for pid in "${BACKEND_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  cleanup
}
trap stop_backends EXIT

DATA_DIR=$TMP/data
ADAPTER="ft:base:support:abc"

check "a tiny base model and its fine-tuned adapter in the artifact store"
expect_exit 0 "$SY" model init --arch llama --layers 2 --hidden 64 --heads 4 --max-positions 512 \
  --init-std 0.1 --seed 9 -o "$DATA_DIR/models/base"
expect_exit 0 "$SY" model init-adapter --model "$DATA_DIR/models/base" --r 4 \
  --targets q_proj,v_proj --init-std 0.3 --seed 4 -o "$DATA_DIR/models/$ADAPTER"

# backend TARGET PROBE [flags...]: one service in its own process; sets ADDR.
backend() {
  local target=$1 probe=$2 port
  shift 2
  port=$(free_port)
  "$SY" serve --target="$target" --config="$ROOT/k8s/base/config/$target.conf" \
    --grpc-listen="127.0.0.1:$port" --metrics-listen= --data-dir="$DATA_DIR" "$@" \
    >>"$TMP/server.log" 2>&1 &
  BACKEND_PIDS+=($!)
  for _ in $(seq 100); do
    # shellcheck disable=SC2086
    if "$SY" $probe --server="127.0.0.1:$port" >/dev/null 2>&1; then
      ADDR=127.0.0.1:$port
      return 0
    fi
    sleep 0.1
  done
  fail "$target not ready after 10 s"
}

check "inference, retrieval and dataset as separate processes"
backend inference "inference list" --model base
INFERENCE=$ADDR
backend retrieval "rag list"
RETRIEVAL=$ADDR
backend dataset "data list" --min-examples 1
DATASET=$ADDR
mkdir -p "$TMP/docs"
echo "Refunds are paid within 14 days of the request." >"$TMP/docs/refunds.md"
echo "The office is open Monday to Friday from 9 to 5." >"$TMP/docs/hours.md"
expect_exit 0 "$SY" rag create handbook --server="$RETRIEVAL"
expect_exit 0 "$SY" rag ingest handbook "$TMP/docs" --server="$RETRIEVAL"

check "serve --target=router --retrieval-addr --inference-addr"
start_serve "experiment list" --target=router --config="$ROOT/k8s/base/config/router.conf" \
  --inference-addr="$INFERENCE" \
  --retrieval-addr="$RETRIEVAL" --dataset-addr="$DATASET"

check "experiment create --file accepts the documented shape"
cat >"$TMP/experiment.json" <<JSON
{"name":"ft-vs-rag","arms":[{"name":"ft","model":"base","adapter":"$ADAPTER"},
{"name":"rag","model":"base","retrieval":{"collection":"handbook","k":4}},
{"name":"both","model":"base","adapter":"$ADAPTER","retrieval":{"collection":"handbook","k":4}}],
"weights":{"ft":50,"rag":30,"both":20}}
JSON
expect_exit 0 "$SY" experiment create --file "$TMP/experiment.json" --server "${SERVER#--server=}"
expect_in "$TMP/out" "experiments/ft-vs-rag"
expect_exit 6 "$SY" experiment create --file "$TMP/experiment.json" "$SERVER"
expect_in "$TMP/err" "already exists"

check "a bad experiment is refused naming the field"
sed 's/"handbook","k":4}},/"nowhere","k":4}},/' "$TMP/experiment.json" >"$TMP/bad.json"
sed -i 's/ft-vs-rag/bad/' "$TMP/bad.json"
expect_exit 1 "$SY" experiment create --file "$TMP/bad.json" "$SERVER"
expect_in "$TMP/err" "arms[1].retrieval.collection"
echo '{"name":"broken", "arms": [' >"$TMP/broken.json"
expect_exit 1 "$SY" experiment create --file "$TMP/broken.json" "$SERVER"

check "experiment show / list, text and JSON"
expect_exit 0 "$SY" experiment show ft-vs-rag "$SERVER"
expect_in "$TMP/out" "handbook k=4"
expect_in "$TMP/out" "50.0%"
expect_exit 0 "$SY" experiment show ft-vs-rag --json "$SERVER"
is_json "$TMP/out"
[[ $(json_field "$TMP/out" 'round(d["effective_weights"]["rag"], 6)') == 0.3 ]] ||
  fail "effective weight of rag"
expect_exit 0 "$SY" experiment list --json "$SERVER"
[[ $(json_field "$TMP/out" 'd["experiments"][0]["experiment_id"]') == ft-vs-rag ]] ||
  fail "experiment list"

check "chat --json has arm, response_id, text, sources"
expect_exit 0 "$SY" chat --server "${SERVER#--server=}" --experiment ft-vs-rag --arm rag \
  "How long do refunds take?" --max-tokens 6 --json
is_json "$TMP/out"
cp "$TMP/out" "$TMP/rag.json"
[[ $(json_field "$TMP/rag.json" 'd["arm"]') == rag ]] || fail "arm"
[[ $(json_field "$TMP/rag.json" 'd["response_id"].startswith("r-")') == True ]] || fail "response_id"
[[ $(json_field "$TMP/rag.json" '"text" in d') == True ]] || fail "text"
[[ $(json_field "$TMP/rag.json" 'd["sources"][0]["document_id"]') == refunds.md ]] ||
  fail "the refunds document ranks first"
expect_exit 0 "$SY" chat "$SERVER" --experiment ft-vs-rag --arm ft "Hello" --max-tokens 4 --json
[[ $(json_field "$TMP/out" 'd.get("sources", [])') == "[]" ]] || fail "ft arm has no sources"
[[ $(json_field "$TMP/out" 'd["adapter"]') == "$ADAPTER" ]] || fail "ft arm adapter"

check "the same user key always gets the same arm"
for key in alice bob carol dave; do
  expect_exit 0 "$SY" chat "$SERVER" --experiment ft-vs-rag --user-key "$key" "hi" \
    --max-tokens 1 --json
  first=$(json_field "$TMP/out" 'd["arm"]')
  for _ in 1 2 3; do
    expect_exit 0 "$SY" chat "$SERVER" --experiment ft-vs-rag --user-key "$key" "again" \
      --max-tokens 1 --json
    [[ $(json_field "$TMP/out" 'd["arm"]') == "$first" ]] || fail "$key changed arm"
  done
done

check "chat --stream prints the answer and the arm"
expect_exit 0 "$SY" chat "$SERVER" --experiment ft-vs-rag --arm both "Office hours?" \
  --max-tokens 5 --stream
expect_in "$TMP/err" "[arm both, response r-"
expect_in "$TMP/err" "[1] "

check "feedback --score and --thumbs, errors"
rid=$(json_field "$TMP/rag.json" 'd["response_id"]')
expect_exit 0 "$SY" feedback --server "${SERVER#--server=}" "$rid" --score 0.9
expect_in "$TMP/out" "arm rag"
expect_exit 0 "$SY" feedback "$SERVER" "$rid" --thumbs down --reviewer ann --comment "vague"
expect_exit 1 "$SY" feedback "$SERVER" "$rid" --score 7
expect_in "$TMP/err" "outside the experiment's scale"
expect_exit 3 "$SY" feedback "$SERVER" r-0000 --score 0.5
expect_exit 2 "$SY" feedback "$SERVER" "$rid"

check "experiment report shows arms, feedback and a verdict"
expect_exit 0 "$SY" experiment report ft-vs-rag "$SERVER"
expect_in "$TMP/out" "verdict: not enough data yet"
expect_in "$TMP/out" "WIN RATE"
expect_exit 0 "$SY" experiment report ft-vs-rag --json --include-excluded "$SERVER"
is_json "$TMP/out"
[[ $(json_field "$TMP/out" '[a["feedback_count"] for a in d["arms"] if a["arm"]=="rag"][0]') == 2 ]] ||
  fail "rag feedback count"

check "shadow pairs: update to shadow the both arm, review the pair"
cat >"$TMP/shadow.json" <<JSON
{"shadow":{"arm":"both","sample_rate":1}}
JSON
expect_exit 0 "$SY" experiment update ft-vs-rag --file "$TMP/shadow.json" --fields shadow "$SERVER"
expect_in "$TMP/out" "shadow: both"
expect_exit 0 "$SY" chat "$SERVER" --experiment ft-vs-rag --arm ft "Refunds?" --max-tokens 3 --json
served=$(json_field "$TMP/out" 'd["response_id"]')
[[ $(json_field "$TMP/out" 'd["shadow_arm"]') == both ]] || fail "shadow arm"
for _ in $(seq 100); do
  "$SY" experiment interactions ft-vs-rag --pairs --json "$SERVER" >"$TMP/pairs" 2>/dev/null
  shadow=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
  d=json.loads(l)
  if d["response_id"]==sys.argv[2]: print(d.get("paired_response_id",""))' "$TMP/pairs" "$served")
  [[ -n $shadow ]] && expect_exit 0 "$SY" compare "$SERVER" "$served" --result second \
    --reviewer ann && break
  sleep 0.1
done
expect_in "$TMP/out" "preferred: both"

check "weights ramp with experiment update --weights"
expect_exit 0 "$SY" experiment update ft-vs-rag --weights ft=70,rag=30,both=0 "$SERVER"
expect_in "$TMP/out" "70.0%"
expect_exit 2 "$SY" experiment update ft-vs-rag --weights ft "$SERVER"

check "export interactions to the dataset service"
expect_exit 0 "$SY" experiment export-interactions ft-vs-rag --dataset prod-answers \
  --include-shadow --json "$SERVER"
is_json "$TMP/out"
expect_exit 0 "$SY" data show prod-answers --server="$DATASET"

check "router metrics carry experiment and arm"
curl -sf "http://127.0.0.1:$MPORT/metrics" >"$TMP/metrics" || fail "metrics endpoint"
expect_in "$TMP/metrics" 'switchyard_router_requests_total{arm="rag",code="OK",experiment="ft-vs-rag"}'
expect_in "$TMP/metrics" 'switchyard_router_arm_weight{arm="ft",experiment="ft-vs-rag"} 0.7'
expect_in "$TMP/metrics" 'switchyard_router_feedback_total{arm="rag",experiment="ft-vs-rag"} 2'

check "archive stops traffic; the router drains on SIGTERM"
expect_exit 0 "$SY" experiment archive ft-vs-rag "$SERVER"
expect_exit 6 "$SY" chat "$SERVER" --experiment ft-vs-rag "Hello?"
expect_in "$TMP/err" "archived"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || fail "router did not exit 0 on SIGTERM"
SERVER_PID=

echo "router_cli_test: $CHECKS checks passed"
