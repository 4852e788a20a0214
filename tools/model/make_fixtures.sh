#!/usr/bin/env bash
# Regenerates every fixture under tests/data/model/ (except the hand-written README.md)
# with fixed seeds, using the independent reference in tools/model/reference.py.
# Needs Debian's /usr/bin/python3 with python3-torch and python3-numpy; nothing else.
#   tools/model/make_fixtures.sh            # regenerate, then run the self-test
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY=/usr/bin/python3
REF=tools/model/reference.py
OUT=tests/data/model
export OMP_NUM_THREADS=1   # one thread: the same float reductions on every run

for d in gpt2 llama llama-untied llama-sharded mistral qwen2 bert bert-cls adapters; do
  rm -rf "${OUT:?}/$d"
done
mkdir -p "$OUT/adapters"

LLAMA3='{"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 16, "rope_type": "llama3"}'

# ---- base checkpoints
$PY $REF create-model gpt2 "$OUT/gpt2" --seed 101 --set n_inner=128
$PY $REF create-model llama "$OUT/llama" --seed 102 \
  --set num_hidden_layers=3 --set num_attention_heads=4 --set num_key_value_heads=2 \
  --set rope_theta=500000.0 --set "rope_scaling=$LLAMA3" --set tie_word_embeddings=true
$PY $REF create-model llama "$OUT/llama-untied" --seed 103 \
  --set num_key_value_heads=4 --set rope_theta=10000.0 --set rope_scaling=null --set tie_word_embeddings=false \
  --set 'torch_dtype="float16"'
$PY $REF create-model mistral "$OUT/mistral" --seed 104 --set 'torch_dtype="bfloat16"'
$PY $REF create-model qwen2 "$OUT/qwen2" --seed 105
$PY $REF create-model bert "$OUT/bert" --seed 106 --pooling mean
$PY $REF create-model bert "$OUT/bert-cls" --seed 107 --pooling cls --no-normalize --set num_hidden_layers=1

# ---- the same weights as llama, in 3 shards
$PY $REF shard "$OUT/llama" "$OUT/llama-sharded" --shards 3

# ---- PEFT LoRA adapters
$PY $REF create-adapter "$OUT/llama" "$OUT/adapters/llama-qv" --seed 201 \
  --targets q_proj,v_proj --r 4 --alpha 8 --base-name tests/data/model/llama
$PY $REF create-adapter "$OUT/llama" "$OUT/adapters/llama-all-rslora" --seed 202 \
  --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --r 8 --alpha 16 --rslora --layers 1 \
  --base-name tests/data/model/llama
$PY $REF create-adapter "$OUT/gpt2" "$OUT/adapters/gpt2-attn" --seed 203 \
  --targets c_attn,c_proj --r 4 --alpha 8 --base-name tests/data/model/gpt2
$PY $REF create-adapter "$OUT/qwen2" "$OUT/adapters/qwen2-qv" --seed 204 \
  --targets q_proj,v_proj --r 4 --alpha 16 --base-name tests/data/model/qwen2

# ---- reference outputs
A="$OUT/adapters"
$PY $REF make-reference "$OUT/gpt2" --seed 301 --adapter "gpt2-attn=$A/gpt2-attn"
$PY $REF make-reference "$OUT/llama" --seed 302 \
  --adapter "llama-qv=$A/llama-qv" --adapter "llama-all-rslora=$A/llama-all-rslora"
$PY $REF make-reference "$OUT/llama-sharded" --seed 302 \
  --adapter "llama-qv=$A/llama-qv" --adapter "llama-all-rslora=$A/llama-all-rslora"
$PY $REF make-reference "$OUT/llama-untied" --seed 303
$PY $REF make-reference "$OUT/mistral" --seed 304
$PY $REF make-reference "$OUT/qwen2" --seed 305 --adapter "qwen2-qv=$A/qwen2-qv"
$PY $REF make-reference "$OUT/bert" --seed 306
$PY $REF make-reference "$OUT/bert-cls" --seed 307

cmp "$OUT/llama/reference.safetensors" "$OUT/llama-sharded/reference.safetensors"
echo "llama-sharded/reference.safetensors is byte-identical to llama's"

$PY $REF selftest
du -sh "$OUT"
