#!/usr/bin/env bash
# End-to-end test of `switchyard model ...`: init, score, generate, merge.
#
#   tests/e2e/model_cli_test.sh <switchyard binary> <repo root>
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <switchyard binary> <repo root>" >&2
  exit 2
fi
SY=$1
ROOT=$2
MODELS=$ROOT/tests/data/model
source "$(dirname "$0")/testlib.sh"

check "model init writes a Hugging Face checkpoint for every architecture"
for arch in llama mistral qwen2 gpt2; do
  expect_exit 0 "$SY" model init --arch "$arch" --layers 2 --hidden 32 --heads 4 --seed 3 -o "$TMP/$arch"
  for f in config.json model.safetensors tokenizer.json tokenizer_config.json generation_config.json; do
    [[ -f $TMP/$arch/$f ]] || fail "$arch: no $f"
  done
  expect_in "$TMP/$arch/config.json" "\"model_type\": \"$arch\""
done
expect_exit 0 "$SY" model init --arch bert --layers 1 --hidden 32 --heads 2 \
  --vocab-from "$ROOT/tests/data/text/bert-uncased" -o "$TMP/bert"
expect_in "$TMP/bert/modules.json" "sentence_transformers.models.Pooling"
expect_in "$TMP/bert/1_Pooling/config.json" "pooling_mode_mean_tokens"

check "model init refuses bad shapes and a non-empty directory"
expect_exit 2 "$SY" model init --arch llama --hidden 64 --heads 5 -o "$TMP/bad"
expect_in "$TMP/err" "--heads (5) must divide --hidden (64)"
expect_exit 6 "$SY" model init --arch llama -o "$TMP/llama"
expect_in "$TMP/err" "not empty"

check "model score prints one log-probability per next token"
expect_exit 0 "$SY" model score --model "$MODELS/llama" --ids "1 5 9 200 7"
[[ $(wc -l <"$TMP/out") -eq 4 ]] || fail "expected 4 lines"
expect_exit 0 "$SY" model score --model "$MODELS/llama" --ids "1,5,9,200,7" --json
is_json "$TMP/out"
cp "$TMP/out" "$TMP/base_scores"

check "model score with the adapter differs from the base and equals the merged model"
expect_exit 0 "$SY" model score --model "$MODELS/llama" --adapter "$MODELS/adapters/llama-qv" \
  --ids "1 5 9 200 7" --json
cp "$TMP/out" "$TMP/adapter_scores"
cmp -s "$TMP/base_scores" "$TMP/adapter_scores" && fail "the adapter changed nothing"
expect_exit 0 "$SY" model merge --model "$MODELS/llama" --adapter "$MODELS/adapters/llama-qv" -o "$TMP/merged"
expect_exit 0 "$SY" model score --model "$TMP/merged" --ids "1 5 9 200 7" --json
python3 - "$TMP/adapter_scores" "$TMP/out" <<'PY' || fail "merged scores differ from adapter scores"
import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
assert len(a) == len(b) == 4, (a, b)
assert all(abs(x - y) < 1e-4 for x, y in zip(a, b)), (a, b)
PY

check "model score rejects ids outside the vocabulary and short input"
expect_exit 1 "$SY" model score --model "$MODELS/llama" --ids "1 99999"
expect_in "$TMP/err" "outside the vocabulary"
expect_exit 2 "$SY" model score --model "$MODELS/llama" --ids "1"

check "model generate is deterministic with a seed and honours max-new-tokens"
expect_exit 0 "$SY" model generate --model "$TMP/llama" --prompt "Hello" --max-new-tokens 12 --seed 7 --json
is_json "$TMP/out"
cp "$TMP/out" "$TMP/gen1"
expect_exit 0 "$SY" model generate --model "$TMP/llama" --prompt "Hello" --max-new-tokens 12 --seed 7 --json
cmp -s "$TMP/gen1" "$TMP/out" || fail "same seed gave different output"
python3 - "$TMP/gen1" <<'PY' || fail "unexpected generate JSON"
import json, sys
g = json.load(open(sys.argv[1]))
assert g["completion_tokens"] == 12 and len(g["token_ids"]) == 12 and len(g["logprobs"]) == 12, g
assert g["finish_reason"] == "length", g
assert all(lp <= 0 for lp in g["logprobs"]), g
PY

check "model generate streams text and stops at a stop token"
expect_exit 0 "$SY" model generate --model "$TMP/gpt2" --prompt "abc" --max-new-tokens 5 --temperature 0
expect_in "$TMP/err" "finish_reason=length"
first=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token_ids"][0])' "$TMP/gen1")
expect_exit 0 "$SY" model generate --model "$TMP/llama" --prompt "Hello" --max-new-tokens 12 --seed 7 \
  --stop-token-ids "$first" --json
python3 -c 'import json,sys; g=json.load(open(sys.argv[1])); assert g["finish_reason"]=="stop" and g["token_ids"]==[], g' \
  "$TMP/out" || fail "stop token did not stop"

check "model generate rejects bad sampling flags naming them"
expect_exit 2 "$SY" model generate --model "$TMP/llama" --prompt "x" --top-p 1.5
expect_in "$TMP/err" "top_p must be in (0, 1]"

check "model merge refuses an adapter for another architecture and leaves no output"
expect_exit 1 "$SY" model merge --model "$MODELS/qwen2" --adapter "$MODELS/adapters/gpt2-attn" -o "$TMP/nope"
expect_in "$TMP/err" "is not a linear layer"
[[ ! -e $TMP/nope ]] || fail "a failed merge left $TMP/nope"

check "a missing model directory exits 3"
expect_exit 3 "$SY" model score --model "$TMP/missing" --ids "1 2"

echo "model_cli_test: all $CHECKS checks passed"
