#!/usr/bin/env bash
# End-to-end test of `switchyard generate` and `switchyard inference ...` against
# `switchyard serve --target=inference` on loopback: a tiny Llama with 17 random
# LoRA adapters. The contract: with temperature 0 the text equals
# `switchyard model generate` on the same model, adapter and prompt, also while
# 16 other requests with other adapters run at once; chat messages, streaming,
# JSON, errors, adapters by name and by path, Score, /metrics and a clean drain.
#
#   tests/e2e/inference_cli_test.sh <switchyard binary> <repo root>
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <switchyard binary> <repo root>" >&2
  exit 2
fi
SY=$1
ROOT=$2
source "$(dirname "$0")/testlib.sh"

DATA_DIR=$TMP/data
MODEL=$DATA_DIR/models/tiny

check "a tiny model and 17 adapters"
expect_exit 0 "$SY" model init --arch llama --layers 2 --hidden 64 --heads 4 --max-positions 512 \
  --init-std 0.1 --seed 5 -o "$MODEL"
for i in $(seq 0 16); do
  expect_exit 0 "$SY" model init-adapter --model "$MODEL" --r 4 --targets q_proj,v_proj,o_proj \
    --init-std 0.2 --seed "$((300 + i))" -o "$TMP/adapters/a$i"
done
# One in the artifact store, found by name; the others by --adapter NAME=DIR.
cp -r "$TMP/adapters/a0" "$DATA_DIR/models/ft-a0"
adapter_flags=()
for i in $(seq 1 16); do adapter_flags+=(--adapter "a$i=$TMP/adapters/a$i"); done

check "serve --target=inference loads --model NAME (from the store) and NAME=DIR"
cp -r "$MODEL" "$TMP/other-model"
start_serve "inference list" --target=inference --model tiny --model "other=$TMP/other-model" \
  --max-batch-size 8 --max-adapters 8 "${adapter_flags[@]}"
expect_exit 0 "$SY" inference list "$SERVER"
expect_in "$TMP/out" "models/tiny"
expect_in "$TMP/out" "models/other"
expect_in "$TMP/out" "LlamaForCausalLM"

check "greedy text equals model generate, base and adapter, stream and unary"
reference() {  # reference ADAPTER_DIR PROMPT N -> $TMP/ref
  local adapter=()
  [[ -n $1 ]] && adapter=(--adapter "$1")
  "$SY" model generate --model "$MODEL" "${adapter[@]}" --prompt "$2" --max-new-tokens "$3" \
    --temperature 0 >"$TMP/ref" 2>/dev/null || fail "model generate failed"
}
reference "" "The switchyard" 24
expect_exit 0 "$SY" generate "$SERVER" --model tiny --prompt "The switchyard" --max-tokens 24 \
  --temperature 0
cmp -s "$TMP/out" "$TMP/ref" || fail "base: server text differs from model generate"
expect_in "$TMP/err" "finish_reason=length"
reference "$TMP/adapters/a3" "The switchyard" 24
expect_exit 0 "$SY" generate "$SERVER" --model models/tiny --adapter a3 --stream \
  --prompt "The switchyard" --max-tokens 24 --temperature 0
cmp -s "$TMP/out" "$TMP/ref" || fail "adapter a3 (stream): server text differs from model generate"
reference "$TMP/adapters/a0" "The switchyard" 24
expect_exit 0 "$SY" generate "$SERVER" --model tiny --adapter ft-a0 \
  --prompt "The switchyard" --max-tokens 24 --temperature 0
cmp -s "$TMP/out" "$TMP/ref" || fail "adapter ft-a0 (store): server text differs from model generate"

check "the same while 16 other requests with other adapters run at once"
pids=()
for i in $(seq 1 16); do
  "$SY" generate "$SERVER" --model tiny --adapter "a$i" --prompt "Other prompt $i" \
    --max-tokens 40 --temperature 0 --ignore-eos >"$TMP/other$i" 2>&1 &
  pids+=($!)
done
reference "$TMP/adapters/a0" "Busy day" 40
expect_exit 0 "$SY" generate "$SERVER" --model tiny --adapter ft-a0 --prompt "Busy day" \
  --max-tokens 40 --temperature 0 --stream
cp "$TMP/out" "$TMP/busy"
for pid in "${pids[@]}"; do wait "$pid" || fail "a concurrent generate failed"; done
cmp -s "$TMP/busy" "$TMP/ref" || fail "ft-a0 under load: server text differs from model generate"
for i in 2 9 16; do
  "$SY" model generate --model "$MODEL" --adapter "$TMP/adapters/a$i" --prompt "Other prompt $i" \
    --max-new-tokens 40 --temperature 0 --ignore-eos >"$TMP/ref$i" 2>/dev/null
  head -n 1 "$TMP/other$i" | cmp -s - <(head -n 1 "$TMP/ref$i") ||
    fail "concurrent request $i differs from model generate"
done

check "chat messages, JSON output, stop strings and seeds"
cat >"$TMP/chat.json" <<'JSON'
[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
JSON
expect_exit 0 "$SY" generate "$SERVER" --model tiny --messages "$TMP/chat.json" --max-tokens 8 \
  --temperature 0 --json --logprobs
json_field "$TMP/out" 'd["usage"]["completionTokens"] in ("8", 8) or d["finishReason"] == "FINISH_REASON_STOP"' |
  grep -q True || fail "chat: unexpected usage"
json_field "$TMP/out" 'len(d.get("logprobs", [])) == len(d.get("tokenIds", []))' | grep -q True ||
  fail "chat: one logprob per token"
expect_exit 0 "$SY" generate "$SERVER" --model tiny --prompt "Seeded" --max-tokens 12 \
  --temperature 0.9 --seed 7 --stream --json
cp "$TMP/out" "$TMP/seed1"
expect_exit 0 "$SY" generate "$SERVER" --model tiny --prompt "Seeded" --max-tokens 12 \
  --temperature 0.9 --seed 7 --stream --json
python3 - "$TMP/seed1" "$TMP/out" <<'PY' || fail "a seed repeats the same tokens"
import json, sys
ids = [[t for line in open(p) for t in json.loads(line).get("tokenIds", [])] for p in sys.argv[1:]]
assert ids[0] == ids[1] and len(ids[0]) == 12, ids
PY

check "errors: unknown model, unknown adapter, corrupt adapter, bad sampling, no input"
expect_exit 3 "$SY" generate "$SERVER" --model nope --prompt x
expect_in "$TMP/err" "models/nope is not loaded"
expect_exit 3 "$SY" generate "$SERVER" --model tiny --adapter missing --prompt x
mkdir -p "$DATA_DIR/models/broken"
cp "$TMP/adapters/a1/adapter_config.json" "$DATA_DIR/models/broken/"
echo "garbage" >"$DATA_DIR/models/broken/adapter_model.safetensors"
expect_exit 1 "$SY" generate "$SERVER" --model tiny --adapter broken --prompt x
expect_in "$TMP/err" "broken"
expect_exit 1 "$SY" generate "$SERVER" --model tiny --prompt x --top-p 2
expect_in "$TMP/err" "top_p"
expect_exit 2 "$SY" generate "$SERVER" --model tiny
expect_in "$TMP/err" "--prompt"
expect_exit 0 "$SY" generate "$SERVER" --model tiny --prompt "still serving" --max-tokens 4

check "inference load-adapter (pinned, by path), list, score, unload"
expect_exit 0 "$SY" inference load-adapter --model tiny pinned --path "$TMP/adapters/a7" --pin "$SERVER"
expect_in "$TMP/out" "pinned"
expect_exit 0 "$SY" inference list --json "$SERVER"
json_field "$TMP/out" '[a["name"] for m in d["models"] if m["name"] == "models/tiny" for a in m["adapters"] if a.get("pinned")]' |
  grep -q pinned || fail "list: the pinned adapter"
expect_exit 0 "$SY" inference score --model tiny --adapter pinned --prompt "Hello" world zzzz "$SERVER"
expect_in "$TMP/out" "LOGPROB"
expect_in "$TMP/out" "zzzz"
expect_exit 0 "$SY" inference unload other "$SERVER"
expect_exit 3 "$SY" generate "$SERVER" --model other --prompt x

check "/metrics has the inference families with model and adapter labels"
curl -sf "http://127.0.0.1:$MPORT/metrics" >"$TMP/metrics" || fail "GET /metrics"
for name in 'switchyard_inference_time_to_first_token_seconds_bucket{adapter="ft-a0"' \
  'switchyard_inference_inter_token_latency_seconds_count{adapter="ft-a0",model="tiny"}' \
  'switchyard_inference_adapters_loaded{model="tiny"}' \
  'switchyard_inference_e2e_request_latency_seconds_count{adapter="",model="tiny"}' \
  'switchyard_inference_prompt_tokens_total{adapter="a3",model="tiny"}' \
  'switchyard_inference_generation_tokens_total{adapter="a3",model="tiny"}' \
  'switchyard_inference_requests_running{model="tiny"}' \
  'switchyard_inference_requests_waiting{model="tiny"}' \
  'switchyard_inference_kv_cache_usage_ratio{model="tiny"}'; do
  expect_in "$TMP/metrics" "$name"
done

check "SIGTERM drains and exits 0"
kill -TERM "$SERVER_PID"
rc=0
wait "$SERVER_PID" || rc=$?
SERVER_PID=
[[ $rc -eq 0 ]] || fail "server exited $rc after SIGTERM"

check "serve refuses a model directory that does not load"
mkdir -p "$TMP/empty-model"
expect_exit 3 "$SY" serve --target=inference --grpc-listen=127.0.0.1:0 --metrics-listen= \
  --data-dir="$DATA_DIR" --model "bad=$TMP/empty-model"
expect_in "$TMP/err" "config.json"
echo '{"model_type": "llama"' >"$TMP/empty-model/config.json"
expect_exit 1 "$SY" serve --target=inference --grpc-listen=127.0.0.1:0 --metrics-listen= \
  --data-dir="$DATA_DIR" --model "bad=$TMP/empty-model"
expect_in "$TMP/err" "config.json"

echo "inference_cli_test: $CHECKS checks passed"
