#!/usr/bin/env bash
# End-to-end test of `switchyard rag ...` against `switchyard serve --target=retrieval`
# on loopback: collections (Flat and HNSW32, hash embedder), ingestion of a directory
# and of JSONL, dense/lexical/hybrid search with metadata filters, deletion, upserts,
# a restart on the same data dir, /metrics and drop.
#
#   tests/e2e/rag_cli_test.sh <switchyard binary> <repo root>
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

# start_server: serve --target=retrieval on fresh ports over $DATA_DIR; sets SERVER, MPORT.
start_server() { start_serve "rag list" --target=retrieval; }

# stop_server: SIGTERM, and the server must drain and exit 0.
stop_server() {
  kill -TERM "$SERVER_PID"
  local rc=0
  wait "$SERVER_PID" || rc=$?
  SERVER_PID=
  [[ $rc -eq 0 ]] || fail "server exited $rc after SIGTERM"
}


# search COLLECTION QUERY [FLAGS...]: `rag search --json` into $TMP/out.
search() {
  expect_exit 0 "$SY" rag search "$1" "$2" "${@:3}" --json "$SERVER"
}
# ids: the document ids of the hits in $TMP/out, in rank order, space-separated.
ids() { json_field "$TMP/out" '" ".join(h["documentId"] for h in hits)'; }
# top_is ID WHAT: the first hit in $TMP/out is ID.
top_is() {
  local got
  got=$(ids)
  [[ ${got%% *} == "$1" ]] || fail "$2: top hit is '${got%% *}' (hits: $got), expected '$1'"
}
# absent ID WHAT: no hit in $TMP/out is document ID.
absent() {
  [[ " $(ids) " != *" $1 "* ]] || fail "$2: '$1' is still returned"
}

# ---- Fixtures ------------------------------------------------------------------------

mkdir -p "$TMP/docs/sub"
printf '# Vacation policy\n\nEmployees accrue vacation days monthly. Submit vacation requests to your manager two weeks ahead.\n' >"$TMP/docs/a.md"
printf 'Password resets: the helpdesk resets laptop passwords and VPN tokens. Call extension 4357.\n' >"$TMP/docs/sub/b.txt"
printf 'Expense reports are filed in the finance portal with receipts attached within thirty days.\n' >"$TMP/docs/sub/c.md"
printf 'not a text document\n' >"$TMP/docs/skipped.pdf"
cat >"$TMP/kb.jsonl" <<'EOF'
{"id": "kb-1", "text": "The printer on floor three jams often; IT replaces the toner cartridge.", "metadata": {"team": "it"}}
{"id": "kb-2", "text": "Parental leave lasts sixteen weeks for all employees, managed by HR.", "metadata": {"team": "hr"}}
{"id": "kb-3", "text": "Wifi network credentials rotate quarterly; IT posts the new wifi password.", "metadata": {"team": "it"}}
{"id": "kb-4", "text": "Quarterly budget reviews happen in finance with department heads.", "metadata": {"team": "finance"}}
EOF
printf '{"id": "x-1", "text": "one"}\n{"id": "x-2", "text": "two"}\nnot json\n' >"$TMP/bad.jsonl"
echo '{"id": "kb-4", "text": "The events committee organises the offsite picnic.", "metadata": {"team": "finance"}}' \
  >"$TMP/kb4_new.jsonl"

start_server

# ---- Collections ---------------------------------------------------------------------

check "rag create makes a Flat collection with the hash embedder"
expect_exit 0 "$SY" rag create handbook --json "$SERVER"
[[ $(json_field "$TMP/out" 'd["stats"]["indexType"]') == IndexFlatIP ]] || fail "not IndexFlatIP"
[[ $(json_field "$TMP/out" 'd["embedder"]["model"]') == hash ]] || fail "not the hash embedder"

check "creating it again exits 6 (ALREADY_EXISTS)"
expect_exit 6 "$SY" rag create handbook "$SERVER"
expect_in "$TMP/err" "ALREADY_EXISTS"

check "a bad factory string exits 1 naming index.factory"
expect_exit 1 "$SY" rag create bad --index "HNSW32,Nonsense" "$SERVER"
expect_in "$TMP/err" "index.factory"

check "rag create --validate-only creates nothing"
expect_exit 0 "$SY" rag create dry --validate-only "$SERVER"
expect_in "$TMP/out" "nothing created"
expect_exit 3 "$SY" rag show dry "$SERVER"
expect_exit 0 "$SY" rag list --json "$SERVER"
[[ $(json_field "$TMP/out" '[c["collectionId"] for c in d["collections"]]') == "['handbook']" ]] ||
  fail "rag list is not just handbook: $(cat "$TMP/out")"

# ---- Ingestion -----------------------------------------------------------------------

check "rag ingest of a directory takes its .md/.txt files, ids relative paths"
expect_exit 0 "$SY" rag ingest handbook "$TMP/docs" --json "$SERVER"
[[ $(json_field "$TMP/out" 'd["documents"]') == 3 ]] || fail "expected 3 documents: $(cat "$TMP/out")"

check "rag ingest of JSONL with metadata"
expect_exit 0 "$SY" rag ingest handbook "$TMP/kb.jsonl" --json "$SERVER"
[[ $(json_field "$TMP/out" 'd["documents"]') == 4 ]] || fail "expected 4 documents"
[[ $(json_field "$TMP/out" 'd["stats"]["documents"]') == 7 ]] || fail "expected 7 in all"

check "a JSONL line that is not JSON fails naming the line"
expect_exit 1 "$SY" rag ingest handbook "$TMP/bad.jsonl" "$SERVER"
expect_in "$TMP/err" "line 3"

# ---- Search --------------------------------------------------------------------------

check "dense, lexical and hybrid search find the keyword's document first"
for mode in dense lexical hybrid; do
  search handbook "vacation days" --mode "$mode" -k 5
  top_is a.md "$mode search"
done
[[ $(json_field "$TMP/out" '"%s %s" % (hits[0].get("denseRank"), hits[0].get("lexicalRank"))') == "1 1" ]] ||
  fail "hybrid top hit lacks dense_rank/lexical_rank 1: $(cat "$TMP/out")"
[[ $(json_field "$TMP/out" 'all("denseRank" in h or "lexicalRank" in h for h in hits)') == True ]] ||
  fail "a hybrid hit has neither rank"
search handbook "laptop passwords helpdesk" --mode lexical
top_is sub/b.txt "nested file id"

check "--filter keeps only matching metadata (one value, then a set)"
search handbook "wifi password printer leave" -k 10 --filter team=it
[[ $(json_field "$TMP/out" 'sorted(h["metadata"]["team"] for h in hits)') == "['it', 'it']" ]] ||
  fail "team=it hits: $(ids)"
search handbook "wifi password printer leave" -k 10 --filter 'team=it|hr' --mode hybrid
[[ $(json_field "$TMP/out" 'sorted(set(h["metadata"]["team"] for h in hits))') == "['hr', 'it']" ]] ||
  fail "team=it|hr hits: $(ids)"

# ---- Delete and upsert ---------------------------------------------------------------

check "rag delete removes a document and reports the missing id"
expect_exit 0 "$SY" rag delete handbook --ids sub/c.md,missing "$SERVER"
expect_in "$TMP/out" "deleted 1 documents"
expect_in "$TMP/out" "not found: missing"
for mode in dense hybrid; do
  search handbook "expense reports receipts" --mode "$mode" -k 10
  absent sub/c.md "$mode search after delete"
done

check "re-ingesting an id replaces its text"
expect_exit 0 "$SY" rag ingest handbook "$TMP/kb4_new.jsonl" --json "$SERVER"
[[ $(json_field "$TMP/out" 'd["documentsReplaced"]') == 1 ]] || fail "kb-4 was not replaced"
search handbook "events committee offsite picnic" --mode lexical
top_is kb-4 "the new text"
search handbook "budget reviews department heads" --mode lexical -k 10
absent kb-4 "the old text"

# ---- HNSW ----------------------------------------------------------------------------

check "an HNSW32 collection ingests, deletes and keeps its counts consistent"
expect_exit 0 "$SY" rag create wiki --index HNSW32 "$SERVER"
expect_exit 0 "$SY" rag ingest wiki "$TMP/kb.jsonl" "$SERVER"
expect_exit 0 "$SY" rag ingest wiki "$TMP/docs" "$SERVER"
expect_exit 0 "$SY" rag delete wiki --ids kb-1 "$SERVER"
search wiki "printer toner cartridge floor three" -k 10
absent kb-1 "HNSW search after delete"
[[ $(ids | wc -w) -eq 6 ]] || fail "HNSW search returned $(ids)"
expect_exit 0 "$SY" rag show wiki --json "$SERVER"
[[ $(json_field "$TMP/out" 'd["stats"]["indexType"]') == IndexHNSWFlat ]] || fail "not HNSW"
python3 - "$TMP/out" <<'PY' || fail "wiki stats inconsistent: $(cat "$TMP/out")"
import json, sys
s = {k: int(v) for k, v in json.load(open(sys.argv[1]))["stats"].items()
     if k in ("documents", "chunks", "vectors", "tombstonedVectors")}
assert s["documents"] == s["chunks"] == 6, s
assert s["vectors"] >= s["chunks"], s
assert s["vectors"] - s.get("tombstonedVectors", 0) == s["chunks"], s
PY

# ---- /metrics ------------------------------------------------------------------------

check "/metrics exports the retrieval metrics"
curl -sf "http://127.0.0.1:$MPORT/metrics" >"$TMP/metrics" || fail "cannot fetch /metrics"
expect_in "$TMP/metrics" "switchyard_retrieval_queries_total"
expect_in "$TMP/metrics" 'switchyard_retrieval_vectors{collection="handbook"}'

# ---- Restart -------------------------------------------------------------------------

check "after SIGTERM and a restart on the same data dir, everything is as it was"
stop_server
start_server
expect_exit 0 "$SY" rag list "$SERVER"
expect_in "$TMP/out" "handbook"
expect_in "$TMP/out" "wiki"
search handbook "vacation days" -k 5
top_is a.md "search after restart"
search handbook "expense reports receipts" -k 10
absent sub/c.md "the deleted document after restart"
search handbook "events committee offsite picnic" --mode lexical
top_is kb-4 "the replaced text after restart"
search wiki "printer toner cartridge floor three" -k 10
absent kb-1 "HNSW deleted document after restart"

# ---- Drop ----------------------------------------------------------------------------

check "rag drop deletes the collection; rag show then exits 3"
expect_exit 0 "$SY" rag drop handbook "$SERVER"
expect_exit 3 "$SY" rag show handbook "$SERVER"
expect_in "$TMP/err" "NOT_FOUND"
expect_exit 3 "$SY" rag search handbook "vacation" "$SERVER"

check "SIGTERM drains and the server exits 0"
stop_server
expect_in "$TMP/server.log" "stopped"

echo "ok: $CHECKS checks passed"
