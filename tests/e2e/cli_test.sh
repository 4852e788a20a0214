#!/usr/bin/env bash
# End-to-end test of the `switchyard` CLI against a real server on loopback.
#
#   tests/e2e/cli_test.sh <switchyard binary> <repo root>
#
# Fails fast with a message naming the check that failed.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <switchyard binary> <repo root>" >&2
  exit 2
fi
SY=$1
ROOT=$2
DATA=$ROOT/tests/data

source "$(dirname "$0")/testlib.sh"

# ---- Local commands (no server) --------------------------------------------------

check "data validate on a valid file exits 0"
expect_exit 0 "$SY" data validate "$DATA/chat_valid.jsonl"
expect_in "$TMP/out" "VALID"

check "data validate on an invalid file exits 1 naming the lines"
expect_exit 1 "$SY" data validate "$DATA/chat_invalid.jsonl"
expect_in "$TMP/out" "INVALID"
expect_in "$TMP/out" "line 3"
expect_in "$TMP/out" "line 5"
expect_in "$TMP/out" "unknown_role"

check "data validate --json prints parseable JSON with the line numbers"
expect_exit 1 "$SY" data validate "$DATA/chat_invalid.jsonl" --json
is_json "$TMP/out"
python3 - "$TMP/out" <<'EOF' || fail "--json report lacks the expected issues"
import json, sys
report = json.load(open(sys.argv[1]))
lines = sorted(int(i["line"]) for i in report["issues"] if i["severity"] == "ERROR")
assert lines == [3, 5], lines
assert report.get("valid", False) is False
EOF
expect_exit 0 "$SY" data validate "$DATA/chat_valid.jsonl" --json
is_json "$TMP/out"

check "data validate of a missing file exits 3"
expect_exit 3 "$SY" data validate "$TMP/nope.jsonl"

check "data validate with an unknown flag is a usage error"
expect_exit 2 "$SY" data validate "$DATA/chat_valid.jsonl" --no-such-flag

check "data validate --tokenizer counts tokens and --max-seq-len flags long examples"
expect_exit 0 "$SY" data validate "$DATA/chat_valid.jsonl" --tokenizer "$ROOT/tests/data/text/gpt2" --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if int(d["trainStats"]["totalTokens"]) > 0 else 1)' "$TMP/out" \
  || fail "no token counts in the report"
expect_exit 1 "$SY" data validate "$DATA/chat_valid.jsonl" --tokenizer "$ROOT/tests/data/text/gpt2" --max-seq-len 5
expect_in "$TMP/out" "too_many_tokens"
expect_exit 2 "$SY" data validate "$DATA/chat_valid.jsonl" --max-seq-len 5

check "data validate reads a pipe (/dev/stdin)"
"$SY" data validate /dev/stdin < "$DATA/chat_valid.jsonl" > "$TMP/out" 2> "$TMP/err" \
  || fail "validate from stdin exited $?"
expect_in "$TMP/out" "VALID"

check "malformed dataset names and versions are usage errors (exit 2), not invalid data"
expect_exit 2 "$SY" data show Bad_Name --server 127.0.0.1:1
expect_exit 2 "$SY" data versions good@1 --server 127.0.0.1:1
expect_exit 2 "$SY" data delete good@latest --server 127.0.0.1:1
expect_exit 2 "$SY" data export good@0 --server 127.0.0.1:1

check "text encode and decode match the Hugging Face fixtures (GPT-2)"
TOK="$ROOT/tests/data/text/gpt2"
python3 -c 'import json,sys
for line in open(sys.argv[1]): print(json.dumps(json.loads(line)["text"]))' \
  "$ROOT/tests/data/text/gpt2.fixtures.jsonl" > "$TMP/texts.jsonl"
"$SY" text encode --tokenizer "$TOK" < "$TMP/texts.jsonl" > "$TMP/ids.jsonl" \
  || fail "text encode exited $?"
python3 -c 'import json,sys
want=[json.loads(l)["ids"] for l in open(sys.argv[1])]
got=[json.loads(l) for l in open(sys.argv[2])]
sys.exit(0 if want == got else 1)' "$ROOT/tests/data/text/gpt2.fixtures.jsonl" "$TMP/ids.jsonl" \
  || fail "text encode ids differ from the fixtures"
"$SY" text decode --tokenizer "$TOK" < "$TMP/ids.jsonl" > "$TMP/decoded.jsonl" \
  || fail "text decode exited $?"
python3 -c 'import json,sys
want=[json.loads(l)["decoded"] for l in open(sys.argv[1])]
got=[json.loads(l) for l in open(sys.argv[2])]
sys.exit(0 if want == got else 1)' "$ROOT/tests/data/text/gpt2.fixtures.jsonl" "$TMP/decoded.jsonl" \
  || fail "text decode differs from the fixtures"
echo '"not closed' | expect_exit 1 "$SY" text encode --tokenizer "$TOK"

check "text chat renders Qwen3's own chat template like Hugging Face"
python3 -c 'import json,sys
for line in open(sys.argv[1]):
    row = json.loads(line)
    if "rendered" in row: print(json.dumps(row["context"], ensure_ascii=False))' \
  "$ROOT/tests/data/text/qwen3.templates.jsonl" > "$TMP/contexts.jsonl"
"$SY" text chat --tokenizer "$ROOT/tests/data/text/qwen3" < "$TMP/contexts.jsonl" > "$TMP/rendered.jsonl" \
  || fail "text chat exited $?"
python3 -c 'import json,sys
want=[json.loads(l)["rendered"] for l in open(sys.argv[1]) if "rendered" in json.loads(l)]
got=[json.loads(l) for l in open(sys.argv[2])]
sys.exit(0 if want == got and want else 1)' "$ROOT/tests/data/text/qwen3.templates.jsonl" "$TMP/rendered.jsonl" \
  || fail "text chat output differs from the fixtures"

check "data prepare converts CSV, applies fixes and writes both split files"
cp "$DATA/support.csv" "$TMP/support.csv"
expect_exit 0 "$SY" data prepare "$TMP/support.csv" -o "$TMP/prepared.jsonl" --split 0.2 \
  --apply-fixes
expect_in "$TMP/out" "applied strip_whitespace"
expect_in "$TMP/out" "applied drop_duplicate"
[[ -s $TMP/prepared.jsonl ]] || fail "prepare wrote no train file"
[[ -s $TMP/prepared_validation.jsonl ]] || fail "prepare wrote no validation file"
train_lines=$(wc -l <"$TMP/prepared.jsonl")
validation_lines=$(wc -l <"$TMP/prepared_validation.jsonl")
[[ $((train_lines + validation_lines)) -eq 10 ]] ||
  fail "prepare split 10 distinct rows into $train_lines + $validation_lines"
grep -q '"  Yes' "$TMP/prepared.jsonl" "$TMP/prepared_validation.jsonl" &&
  fail "prepare --apply-fixes kept the surrounding whitespace"
cmp -s "$DATA/support.csv" "$TMP/support.csv" || fail "prepare changed its input file"
expect_exit 0 "$SY" data validate "$TMP/prepared.jsonl" --min-examples 1

# Graders: one in the proto JSON form, one in OpenAI's form (a weighted multi grader).
cat >"$TMP/exact.json" <<'EOF'
{"name": "exact", "string_check": {"reference": "{{item.answer}}", "operation": "eq", "trim": true}}
EOF
cat >"$TMP/openai.json" <<'EOF'
{"type": "multi", "name": "score", "calculate_output": "0.75 * exact + 0.25 * close",
 "graders": {
   "exact": {"type": "string_check", "input": "{{sample.output_text}}",
             "reference": "{{item.answer}}", "operation": "ilike"},
   "close": {"type": "text_similarity", "input": "{{sample.output_text}}",
             "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"}}}
EOF

check "grader validate prints either JSON form in the proto form"
expect_exit 0 "$SY" grader validate --grader "$TMP/exact.json"
is_json "$TMP/out"
[[ $(json_field "$TMP/out" 'd["string_check"]["operation"]') == eq ]] ||
  fail "validate did not print the proto form"
expect_exit 0 "$SY" grader validate --grader "$TMP/openai.json"
python3 - "$TMP/out" <<'PY' || fail "the OpenAI form did not become weighted sub-graders"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["name"] == "score", d
subs = {w["grader"]["name"]: w for w in d["multi"]["graders"]}
assert subs["exact"]["weight"] == 0.75 and subs["close"]["weight"] == 0.25, subs
assert subs["exact"]["grader"]["string_check"]["operation"] == "contains", subs
assert subs["exact"]["grader"]["string_check"]["ignore_case"] is True, subs
assert subs["close"]["grader"]["text_similarity"]["metric"] == "fuzzy", subs
PY

check "grader validate of an invalid grader exits 1 naming the field"
echo '{"multi": {"graders": [{"grader": {"string_check": {"operation": "equals"}}}]}}' \
  >"$TMP/bad_enum.json"
expect_exit 1 "$SY" grader validate --grader "$TMP/bad_enum.json"
expect_in "$TMP/err" "grader.multi.graders[0].grader.string_check.operation"
echo '{"type": "string_check", "name": "s", "input": "{{sample.output_text}}",
  "reference": "{{item.answer", "operation": "eq"}' >"$TMP/bad_template.json"
expect_exit 1 "$SY" grader validate --grader "$TMP/bad_template.json"
expect_in "$TMP/err" "grader.string_check.reference: unclosed"
echo 'not json' >"$TMP/not_json.json"
expect_exit 1 "$SY" grader validate --grader "$TMP/not_json.json"
expect_exit 3 "$SY" grader validate --grader "$TMP/missing.json"
expect_exit 2 "$SY" grader validate

check "serve refuses an unknown target, naming the known ones"
expect_exit 2 "$SY" serve --target=gateway --grpc-listen=127.0.0.1:0 --metrics-listen= \
  --data-dir="$TMP/unused"
expect_in "$TMP/err" "unknown --target=gateway"
expect_in "$TMP/err" "router"

# ---- Server --------------------------------------------------------------------------

PORT=$(free_port)
MPORT=$(free_port)
while [[ $MPORT -eq $PORT ]]; do MPORT=$(free_port); done
SERVER="--server=127.0.0.1:$PORT"

check "serve --target=dataset starts and answers"
"$SY" serve --target=dataset --grpc-listen="127.0.0.1:$PORT" \
  --metrics-listen="127.0.0.1:$MPORT" --data-dir="$TMP/data" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
ready=0
for _ in $(seq 100); do
  if "$SY" data list "$SERVER" >/dev/null 2>&1; then
    ready=1
    break
  fi
  kill -0 "$SERVER_PID" 2>/dev/null || fail "server exited during start"
  sleep 0.1
done
[[ $ready -eq 1 ]] || fail "server not ready after 10 s"

check "data upload exits 0 and reports the version"
expect_exit 0 "$SY" data upload "$DATA/chat_valid.jsonl" --name support-faq "$SERVER"
expect_in "$TMP/out" "datasets/support-faq/versions/1"

check "data upload --json prints the response"
expect_exit 0 "$SY" data upload "$DATA/chat_valid.jsonl" --name support-faq "$SERVER" --json
is_json "$TMP/out"
expect_in "$TMP/out" "datasets/support-faq/versions/2"

check "data list, with and without --json"
expect_exit 0 "$SY" data list "$SERVER"
expect_in "$TMP/out" "support-faq"
expect_in "$TMP/out" "v2"
expect_exit 0 "$SY" data list "$SERVER" --json
is_json "$TMP/out"
expect_in "$TMP/out" "\"datasets/support-faq\""

check "data show, with and without --json"
expect_exit 0 "$SY" data show support-faq "$SERVER"
expect_in "$TMP/out" "datasets/support-faq"
expect_in "$TMP/out" "sha256"
expect_exit 0 "$SY" data show support-faq@1 "$SERVER" --json
is_json "$TMP/out"
expect_in "$TMP/out" "datasets/support-faq/versions/1"

check "data stats, with and without --json"
expect_exit 0 "$SY" data stats support-faq "$SERVER"
expect_in "$TMP/out" "examples"
expect_in "$TMP/out" "12"
expect_exit 0 "$SY" data stats support-faq "$SERVER" --json
is_json "$TMP/out"

check "data versions, with and without --json"
expect_exit 0 "$SY" data versions support-faq "$SERVER"
expect_in "$TMP/out" "v1"
expect_in "$TMP/out" "v2"
expect_exit 0 "$SY" data versions support-faq "$SERVER" --json
is_json "$TMP/out"

check "data export writes the stored bytes (file and stdout)"
expect_exit 0 "$SY" data export support-faq@1 "$SERVER" -o "$TMP/exported.jsonl"
cmp "$DATA/chat_valid.jsonl" "$TMP/exported.jsonl" || fail "export differs from the upload"
expect_exit 0 "$SY" data export support-faq "$SERVER"
cmp "$DATA/chat_valid.jsonl" "$TMP/out" || fail "export to stdout differs from the upload"

check "data append creates a new version holding both files' examples"
head -n 3 "$DATA/chat_valid.jsonl" | sed 's/Answer briefly/Answer very briefly/' >"$TMP/extra.jsonl"
expect_exit 0 "$SY" data append support-faq "$TMP/extra.jsonl" "$SERVER"
expect_in "$TMP/out" "datasets/support-faq/versions/3"
expect_exit 0 "$SY" data export support-faq@3 "$SERVER" -o "$TMP/appended.jsonl"
cat "$DATA/chat_valid.jsonl" "$TMP/extra.jsonl" >"$TMP/expected.jsonl"
cmp "$TMP/expected.jsonl" "$TMP/appended.jsonl" || fail "appended version has the wrong bytes"

check "data delete NAME@V deletes one version"
expect_exit 0 "$SY" data delete support-faq@2 "$SERVER"
expect_exit 3 "$SY" data show support-faq@2 "$SERVER"
expect_exit 0 "$SY" data show support-faq@1 "$SERVER"

check "a bad upload exits 1, names the lines and stores nothing"
expect_exit 1 "$SY" data upload "$DATA/chat_invalid.jsonl" --name broken "$SERVER"
expect_in "$TMP/err" "line 3"
expect_in "$TMP/err" "line 5"
expect_exit 3 "$SY" data show broken "$SERVER"
staged=$(find "$TMP/data/datasets/.staging" -mindepth 1 | wc -l)
[[ $staged -eq 0 ]] || fail "staging holds $staged entries after a rejected upload"
[[ ! -e $TMP/data/datasets/broken ]] || fail "a rejected upload left datasets/broken"

check "a client killed with SIGKILL mid-upload leaves no version and no staged files"
# The upload reads a FIFO, so the client is provably inside the stream when killed.
mkfifo "$TMP/slow.jsonl"
"$SY" data upload "$TMP/slow.jsonl" --name killed "$SERVER" >"$TMP/killed.out" 2>&1 &
UPLOAD_PID=$!
exec 3>"$TMP/slow.jsonl"  # blocks until the client opens the FIFO
python3 -c 'import sys
line = open(sys.argv[1], "rb").read()
sys.stdout.buffer.write(line * 1000)' "$DATA/chat_valid.jsonl" >&3  # > 1 MiB: chunks flow
for _ in $(seq 1 50); do
  [[ -n $(ls -A "$TMP/data/datasets/.staging" 2>/dev/null) ]] && break
  sleep 0.1
done
[[ -n $(ls -A "$TMP/data/datasets/.staging") ]] || fail "the upload never reached the server"
kill -KILL "$UPLOAD_PID"
wait "$UPLOAD_PID" 2>/dev/null || true
exec 3>&-
for _ in $(seq 1 50); do
  [[ -z $(ls -A "$TMP/data/datasets/.staging") ]] && break
  sleep 0.1
done
[[ -z $(ls -A "$TMP/data/datasets/.staging") ]] || fail "the killed upload left staged files"
expect_exit 3 "$SY" data show killed "$SERVER"

check "data delete NAME deletes the dataset"
expect_exit 0 "$SY" data delete support-faq "$SERVER"
expect_exit 3 "$SY" data show support-faq "$SERVER"
[[ ! -e $TMP/data/datasets/support-faq ]] || fail "deleted dataset left files"

check "data show of a missing dataset exits 3"
expect_exit 3 "$SY" data show missing "$SERVER"

check "/metrics exports the gRPC server metrics"
curl -sf "http://127.0.0.1:$MPORT/metrics" >"$TMP/metrics" || fail "cannot fetch /metrics"
expect_in "$TMP/metrics" "grpc_server_handled_total"
expect_in "$TMP/metrics" 'grpc_method="ListDatasets"'
expect_in "$TMP/metrics" "switchyard_dataset_uploads_total"

check "SIGTERM drains and the server exits 0"
kill -TERM "$SERVER_PID"
rc=0
wait "$SERVER_PID" || rc=$?
SERVER_PID=
[[ $rc -eq 0 ]] || fail "server exited $rc after SIGTERM"
expect_in "$TMP/server.log" "stopped"

check "a client with no server exits 4"
expect_exit 4 "$SY" data list "$SERVER" --timeout=5

# ---- Graders on the training service --------------------------------------------------

check "serve --target=training starts and answers"
DATA_DIR=$TMP/training-data
start_serve "models list" --target=training

check "grader run: string_check passes and fails, with the rendered templates"
expect_exit 0 "$SY" grader run --grader "$TMP/exact.json" --output " Paris " \
  --item '{"answer": "Paris"}' "$SERVER"
expect_in "$TMP/out" "reward 1.0000"
expect_in "$TMP/out" "exact.reference"
expect_exit 0 "$SY" grader run --grader "$TMP/exact.json" --output "London" \
  --item '{"answer": "Paris"}' "$SERVER"
expect_in "$TMP/out" "reward 0.0000"
expect_in "$TMP/out" "London"

check "grader run --json: a multi grader in OpenAI's form, output and item from files"
printf 'It is PARIS.' >"$TMP/sample.txt"
echo '{"answer": "paris"}' >"$TMP/item.json"
expect_exit 0 "$SY" grader run --grader "$TMP/openai.json" --output-file "$TMP/sample.txt" \
  --item-file "$TMP/item.json" --json "$SERVER"
python3 - "$TMP/out" <<'PY' || fail "grader run --json has the wrong rewards"
import json, sys
d = json.load(open(sys.argv[1]))
r = d["grader_rewards"]
assert r["exact"] == 1, r
assert 0 < r["close"] < 1, r
assert abs(d["reward"] - (0.75 + 0.25 * r["close"])) < 1e-9, d
assert abs(r["score"] - d["reward"]) < 1e-12, d
assert d["rendered"]["exact.reference"] == "paris", d
PY

check "grader run: bad input exits 1 naming the field; bad flags exit 2"
expect_exit 1 "$SY" grader run --grader "$TMP/exact.json" --output x --item '{"other": 1}' \
  "$SERVER"
expect_in "$TMP/err" "grader.string_check.reference: {{item.answer}}"
expect_in "$TMP/err" "INVALID_ARGUMENT"
expect_exit 1 "$SY" grader run --grader "$TMP/bad_enum.json" --output x "$SERVER"
expect_in "$TMP/err" "grader.multi.graders[0].grader.string_check.operation"
expect_exit 2 "$SY" grader run --grader "$TMP/exact.json" "$SERVER"
expect_exit 2 "$SY" grader run --grader "$TMP/exact.json" --output x \
  --output-file "$TMP/sample.txt" "$SERVER"
expect_exit 2 "$SY" grader run --grader "$TMP/exact.json" --output x --item '[1]' "$SERVER"

kill -TERM "$SERVER_PID"
rc=0
wait "$SERVER_PID" || rc=$?
SERVER_PID=
[[ $rc -eq 0 ]] || fail "training server exited $rc after SIGTERM"

echo "cli_test: all $CHECKS checks passed"
