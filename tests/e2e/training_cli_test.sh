#!/usr/bin/env bash
# End-to-end test of `switchyard train ...` and `switchyard models ...` against
# `switchyard serve --target=all` on loopback: register a tiny model, upload a
# dataset, fine-tune (supervised, DPO with the adapter measured by inference
# score, reinforcement with a grader), watch, and survive a kill -9 of the server mid-job with a
# result identical to an uninterrupted run.
#
#   tests/e2e/training_cli_test.sh <switchyard binary> <repo root>
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <switchyard binary> <repo root>" >&2
  exit 2
fi
SY=$1
ROOT=$2
source "$(dirname "$0")/testlib.sh"

DATA_DIR=$TMP/data
SERVER=

# start_server: serve --target=all on fresh ports over $DATA_DIR; sets SERVER.
start_server() { start_serve "models list" --target=all --min-examples=1; }

# ---- Setup ---------------------------------------------------------------------------

check "model init writes the tiny base model"
expect_exit 0 "$SY" model init --arch llama --layers 2 --hidden 64 --heads 4 --init-std 0.1 \
  --seed 1 -o "$TMP/tiny"

# The echo task: "Echo: <word>" -> "<word> <word>", 40 training and 8 validation lines.
python3 - "$TMP/echo.jsonl" "$TMP/echo_val.jsonl" <<'PY'
import json, sys
words = ["apple", "river", "stone", "cloud", "maple", "tiger", "ocean", "piano", "lemon",
         "amber", "delta", "flint", "grape", "heron", "ivory", "jelly", "koala", "lunar",
         "mango", "nylon"]
def line(w, i):
    return json.dumps({"messages": [
        {"role": "system", "content": "Repeat twice."},
        {"role": "user", "content": f"Echo: {w} {i}"},
        {"role": "assistant", "content": f"{w} {w}"}]})
with open(sys.argv[1], "w") as f:
    for i in range(40):
        f.write(line(words[i % 20], i) + "\n")
with open(sys.argv[2], "w") as f:
    for i in range(8):
        f.write(line(words[(i * 7) % 20], 100 + i) + "\n")
PY

start_server

check "models register adds the base model"
expect_exit 0 "$SY" models register tiny --path "$TMP/tiny" "$SERVER"
expect_in "$TMP/out" "models/tiny"
expect_exit 0 "$SY" models show tiny "$SERVER" --json
is_json "$TMP/out"
[[ $(json_field "$TMP/out" 'd["kind"]') == MODEL_KIND_BASE ]] || fail "tiny is not a base model"
expect_exit 6 "$SY" models register tiny --path "$TMP/tiny" "$SERVER"
expect_in "$TMP/err" "ALREADY_EXISTS"

check "data upload stores the dataset with its validation file"
expect_exit 0 "$SY" data upload "$TMP/echo.jsonl" --validation-file "$TMP/echo_val.jsonl" \
  --name echo "$SERVER"

# ---- Bad input -----------------------------------------------------------------------

check "a bad flag value exits 2 and names the flag"
expect_exit 2 "$SY" train create --base tiny --dataset echo@1 --epochs three "$SERVER"
expect_in "$TMP/err" "--epochs"
expect_exit 2 "$SY" train create --base tiny --dataset echo@1 --lr-scheduler fast "$SERVER"
expect_in "$TMP/err" "--lr-scheduler"
expect_exit 2 "$SY" train create --dataset echo@1 "$SERVER"
expect_in "$TMP/err" "--base"

check "a value out of range exits 1 and names the field"
expect_exit 1 "$SY" train create --base tiny --dataset echo@1 --learning-rate -1 "$SERVER"
expect_in "$TMP/err" "hyperparameters.learning_rate"

check "an unknown dataset exits 3"
expect_exit 3 "$SY" train create --base tiny --dataset nope@1 "$SERVER"

check "train create --validate-only resolves the settings and queues nothing"
expect_exit 0 "$SY" train create --base tiny --dataset echo@1 --validate-only "$SERVER"
expect_in "$TMP/out" "VALID"
expect_in "$TMP/out" "resolved settings"

check "a quantised base recomputes layers unless the job says otherwise"
expect_exit 0 "$SY" train create --base tiny --dataset echo@1 --quantize-base nf4 --validate-only "$SERVER"
expect_in "$TMP/out" "gradient checkpointing (layers recomputed)"
expect_exit 0 "$SY" train create --base tiny --dataset echo@1 --quantize-base nf4 \
  --no-gradient-checkpointing --validate-only "$SERVER"
expect_in "$TMP/out" "activations kept"

check "train create --base accepts a model directory (registered linked under its name)"
(cd "$TMP" && "$SY" train create --base ./tiny/ --dataset echo@1 --validate-only --json \
  "$SERVER" >"$TMP/out" 2>"$TMP/err") || fail "exit $?: $(cat "$TMP/err")"
[[ $(json_field "$TMP/out" 'd["spec"]["baseModel"]') == tiny-2 ]] || fail "base is not tiny-2"
expect_exit 0 "$SY" models show tiny-2 "$SERVER"
expect_exit 0 "$SY" models delete tiny-2 "$SERVER"

# ---- A job from start to finish ------------------------------------------------------

# Both jobs of the crash test use exactly these settings (and a different suffix).
JOB_FLAGS=(--base tiny --dataset echo@1 --seed 5 --epochs 8 --checkpoint-interval 2
  --batch-size 2 --lora-r 4 --learning-rate 0.01 --precision fp32 --device cpu)

check "train create prints the job as JSON"
expect_exit 0 "$SY" train create "${JOB_FLAGS[@]}" --suffix a --json "$SERVER"
is_json "$TMP/out"
JOB_A=$(json_field "$TMP/out" 'd["jobId"]')
[[ $(json_field "$TMP/out" 'd["state"]') == JOB_STATE_QUEUED ]] || fail "a new job is not queued"
[[ $(json_field "$TMP/out" '"warmupRatio" in d["spec"]["hyperparameters"]') == False ]] ||
  fail "an unset flag was sent"

check "train watch follows the job to success and exits 0"
expect_exit 0 "$SY" train watch "$JOB_A" "$SERVER"
expect_in "$TMP/out" "state queued"
expect_in "$TMP/out" "-> running"
expect_in "$TMP/out" "step 160/160 loss"
expect_in "$TMP/out" "eval step"
expect_in "$TMP/out" "checkpoint step-2"
expect_in "$TMP/out" "-> succeeded"
expect_in "$TMP/out" "models/ft:tiny:a:$JOB_A"

check "train watch --json prints one event per line"
expect_exit 0 "$SY" train watch "$JOB_A" --json "$SERVER"
python3 - "$TMP/out" <<'PY' || fail "watch --json lines are not gapless JSON events"
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
assert [int(e["sequence"]) for e in events] == list(range(1, len(events) + 1))
assert events[-1]["stateChange"]["toState"] == "JOB_STATE_SUCCEEDED"
PY

check "train show, events and checkpoints"
expect_exit 0 "$SY" train show "$JOB_A" "$SERVER"
expect_in "$TMP/out" "succeeded"
expect_in "$TMP/out" "resolved settings"
expect_exit 0 "$SY" train events "jobs/$JOB_A" "$SERVER"
expect_in "$TMP/out" "step 1/160"
expect_exit 0 "$SY" train checkpoints "$JOB_A" "$SERVER"
expect_in "$TMP/out" "jobs/$JOB_A/checkpoints/"

# ---- DPO on preference pairs, measured with Score ------------------------------------

check "train create --method dpo on a preference dataset: reward accuracy rises"
python3 - "$TMP/prefs.jsonl" "$TMP/prompt.json" <<'PY'
import json, sys
words = ["apple", "river", "stone", "cloud", "maple", "tiger", "ocean", "piano", "lemon",
         "amber", "delta", "flint"]
with open(sys.argv[1], "w") as f:
    for i in range(24):
        w = words[i % 12]
        f.write(json.dumps({
            "prompt": [{"role": "system", "content": "Repeat twice."},
                       {"role": "user", "content": f"Echo: {w}"}],
            "chosen": [{"role": "assistant", "content": f"{w} {w}"}],
            "rejected": [{"role": "assistant", "content": "no"}]}) + "\n")
json.dump([{"role": "system", "content": "Repeat twice."},
           {"role": "user", "content": "Echo: maple"}], open(sys.argv[2], "w"))
PY
expect_exit 0 "$SY" data upload "$TMP/prefs.jsonl" --name prefs "$SERVER"
expect_exit 2 "$SY" train create --base tiny --dataset prefs@1 --dpo-beta 0.1 "$SERVER"
expect_in "$TMP/err" "--method dpo"
expect_exit 1 "$SY" train create --base tiny --dataset echo@1 --method dpo "$SERVER"
expect_in "$TMP/err" "preference data"
expect_exit 0 "$SY" train create --base tiny --dataset prefs@1 --method dpo --dpo-beta 0.1 \
  --epochs 4 --batch-size 4 --lora-r 4 --learning-rate 0.01 --precision fp32 --device cpu \
  --validation-fraction 0.25 --seed 3 --suffix dpo --json "$SERVER"
JOB_DPO=$(json_field "$TMP/out" 'd["jobId"]')
expect_exit 0 "$SY" train watch "$JOB_DPO" "$SERVER"
expect_in "$TMP/out" "reward_acc"
expect_in "$TMP/out" "-> succeeded"
expect_exit 0 "$SY" train show "$JOB_DPO" --json "$SERVER"
python3 - "$TMP/out" <<'PY' || fail "DPO job: reward accuracy did not rise above 0.9"
import json, sys
job = json.load(open(sys.argv[1]))
acc = job["latestTrain"]["dpo"].get("rewardAccuracy", 0)
assert acc > 0.9, acc
assert job["resolvedSpec"]["dpo"]["lossType"] == "DPO_LOSS_TYPE_SIGMOID"
PY

check "inference score: the DPO adapter prefers the chosen answer more than the base"
expect_exit 0 "$SY" inference load tiny "$SERVER"
for adapter in "" "ft:tiny:dpo:$JOB_DPO"; do
  expect_exit 0 "$SY" inference score --model tiny ${adapter:+--adapter "$adapter"} \
    --messages "$TMP/prompt.json" "maple maple" "no" --json "$SERVER"
  cp "$TMP/out" "$TMP/score-${adapter:+dpo}base"
done
python3 - "$TMP/score-base" "$TMP/score-dpobase" <<'PY' || fail "DPO did not shift the preference"
import json, sys
def margin(path):
    s = json.load(open(path))["scores"]
    return s[0].get("logprob", 0) - s[1].get("logprob", 0)
base, dpo = margin(sys.argv[1]), margin(sys.argv[2])
print(f"log p(chosen) - log p(rejected): base {base:.3f}, DPO adapter {dpo:.3f}")
assert dpo > base + 1.0, (base, dpo)
PY

# ---- Reinforcement fine-tuning with a grader ------------------------------------------

check "train create --method reinforcement --grader (OpenAI form) samples, grades and succeeds"
cat >"$TMP/grader.json" <<'JSON'
{"type": "string_check", "name": "has_e", "input": "{{sample.output_text}}",
 "reference": "e", "operation": "like"}
JSON
expect_exit 2 "$SY" train create --base tiny --dataset echo@1 --grader "$TMP/grader.json" "$SERVER"
expect_in "$TMP/err" "--method reinforcement"
echo '{"type": "string_check", "operation": "equals"}' >"$TMP/bad_grader.json"
expect_exit 1 "$SY" train create --base tiny --dataset echo@1 --method reinforcement \
  --grader "$TMP/bad_grader.json" "$SERVER"
expect_in "$TMP/err" "operation"
expect_exit 0 "$SY" train create --base tiny --dataset echo@1 --method reinforcement \
  --grader "$TMP/grader.json" --num-generations 2 --max-completion-tokens 4 --epochs 1 \
  --batch-size 8 --lora-r 4 --learning-rate 0.01 --precision fp32 --device cpu --seed 2 \
  --suffix rl --json "$SERVER"
JOB_RL=$(json_field "$TMP/out" 'd["jobId"]')
expect_exit 0 "$SY" train watch "$JOB_RL" "$SERVER"
expect_in "$TMP/out" "reward"
expect_in "$TMP/out" "-> succeeded"
expect_exit 0 "$SY" train show "$JOB_RL" "$SERVER"
expect_in "$TMP/out" "2 generations per prompt"

# ---- kill -9 mid-job, restart, resume ------------------------------------------------

check "a second identical job survives kill -9 of the server"
expect_exit 0 "$SY" train create "${JOB_FLAGS[@]}" --suffix b --json "$SERVER"
JOB_B=$(json_field "$TMP/out" 'd["jobId"]')
mid_run=0
for _ in $(seq 1 1200); do
  "$SY" train show "$JOB_B" --json "$SERVER" >"$TMP/show.json" 2>/dev/null || true
  state=$(json_field "$TMP/show.json" 'd.get("state", "")' 2>/dev/null || echo)
  step=$(json_field "$TMP/show.json" 'int(d.get("step", 0))' 2>/dev/null || echo 0)
  [[ $state == JOB_STATE_SUCCEEDED ]] && fail "job b finished before it could be interrupted"
  if [[ $step -ge 3 ]] && ls "$DATA_DIR/jobs/$JOB_B/checkpoints" 2>/dev/null | grep -q step-; then
    mid_run=1
    break
  fi
  sleep 0.05
done
[[ $mid_run -eq 1 ]] || fail "job b never reached step 3 with a checkpoint"
kill -KILL "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=
start_server
expect_exit 0 "$SY" train watch "$JOB_B" "$SERVER"
expect_in "$TMP/out" "the service restarted"
# The newest checkpoint: step-N, or epoch-N when the kill came right after an epoch end.
expect_in "$TMP/out" "from jobs/$JOB_B/checkpoints/"
expect_in "$TMP/out" "-> succeeded"
expect_exit 0 "$SY" train show "$JOB_B" --json "$SERVER"
[[ $(json_field "$TMP/out" 'd.get("restarts", 0)') -eq 1 ]] || fail "job b's restarts is not 1"

check "the resumed job's adapter equals the uninterrupted one"
A_FILE="$DATA_DIR/models/ft:tiny:a:$JOB_A/adapter_model.safetensors"
B_FILE="$DATA_DIR/models/ft:tiny:b:$JOB_B/adapter_model.safetensors"
[[ -f $A_FILE ]] || fail "no adapter at $A_FILE"
[[ -f $B_FILE ]] || fail "no adapter at $B_FILE"
cmp "$A_FILE" "$B_FILE" || fail "the resumed run's adapter differs from the uninterrupted run's"

check "models list shows the base and the fine-tuned models"
expect_exit 0 "$SY" models list "$SERVER"
expect_in "$TMP/out" "tiny"
expect_in "$TMP/out" "ft:tiny:a:$JOB_A"
expect_in "$TMP/out" "ft:tiny:b:$JOB_B"
expect_exit 0 "$SY" models list --kind adapter --json "$SERVER"
[[ $(json_field "$TMP/out" 'len(d["models"])') -eq 4 ]] || fail "expected 4 adapters"
expect_exit 0 "$SY" models show "ft:tiny:a:$JOB_A" "$SERVER"
expect_in "$TMP/out" "jobs/$JOB_A"
expect_in "$TMP/out" "echo@1"
expect_exit 2 "$SY" models list --kind huge "$SERVER"
expect_in "$TMP/err" "--kind"

check "train list shows the jobs"
expect_exit 0 "$SY" train list "$SERVER"
expect_in "$TMP/out" "$JOB_A"
expect_in "$TMP/out" "$JOB_B"
expect_exit 0 "$SY" train list --state succeeded --json "$SERVER"
[[ $(json_field "$TMP/out" 'len(d["jobs"])') -eq 4 ]] || fail "expected 4 succeeded jobs"

check "train cancel of a queued job; train watch of a cancelled job exits 6"
expect_exit 0 "$SY" train create --base tiny --dataset echo@1 --epochs 50 --json "$SERVER"
JOB_C=$(json_field "$TMP/out" 'd["jobId"]')
expect_exit 0 "$SY" train create --base tiny --dataset echo@1 --json "$SERVER"
JOB_D=$(json_field "$TMP/out" 'd["jobId"]')
[[ $(json_field "$TMP/out" 'd["state"]') == JOB_STATE_QUEUED ]] || fail "job d is not queued"
expect_exit 0 "$SY" train cancel "$JOB_D" "$SERVER"
expect_in "$TMP/out" "cancelled"
expect_exit 6 "$SY" train watch "$JOB_D" "$SERVER"
expect_exit 6 "$SY" train cancel "$JOB_D" "$SERVER"
expect_in "$TMP/err" "FAILED_PRECONDITION"
expect_exit 0 "$SY" train cancel "$JOB_C" "$SERVER"
expect_exit 6 "$SY" train watch "$JOB_C" "$SERVER"
expect_in "$TMP/out" "-> cancelled"

check "a base that fine-tuned models derive from is not deleted without --force"
expect_exit 6 "$SY" models delete tiny "$SERVER"
expect_in "$TMP/err" "FAILED_PRECONDITION"
expect_exit 0 "$SY" models delete "ft:tiny:a:$JOB_A" "$SERVER"
expect_exit 3 "$SY" models show "ft:tiny:a:$JOB_A" "$SERVER"

check "/metrics exports the training metrics"
curl -sf "http://127.0.0.1:$MPORT/metrics" >"$TMP/metrics" || fail "cannot fetch /metrics"
expect_in "$TMP/metrics" "switchyard_training_jobs"
expect_in "$TMP/metrics" 'grpc_method="WatchJob"'

check "SIGTERM drains and the server exits 0"
kill -TERM "$SERVER_PID"
rc=0
wait "$SERVER_PID" || rc=$?
SERVER_PID=
[[ $rc -eq 0 ]] || fail "server exited $rc after SIGTERM"
expect_in "$TMP/server.log" "stopped"

echo "ok: $CHECKS checks passed"
