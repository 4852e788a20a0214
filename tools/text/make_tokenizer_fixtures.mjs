#!/usr/bin/env node
// Reference token ids for tokenizer parity tests.
//
// For each input line (a JSON string) writes one JSON object:
//   {"text": ..., "ids": [...], "ids_no_special": [...], "tokens": [...],
//    "decoded": ..., "decoded_skip_special": ..., "decoded_clean_up": ...}
// where
//   ids                  = encode(text, add_special_tokens = true)
//   ids_no_special       = encode(text, add_special_tokens = false)
//   tokens               = the token strings of `ids` (for reading diffs)
//   decoded              = decode(ids, skip_special_tokens = false)
//   decoded_skip_special = decode(ids, skip_special_tokens = true)
//   decoded_clean_up     = `decoded` after transformers' clean_up_tokenization() when
//                          tokenizer_config.json sets clean_up_tokenization_spaces
//                          (absent: false), i.e. what transformers' tokenizer.decode()
//                          returns for a fast tokenizer; else equal to `decoded`
//
// Reference implementations (installed from npm, offline at run time):
//   --impl rust (default)  `tokenizers`: Hugging Face's own Node binding of the Rust
//                          `tokenizers` crate (the library Python `tokenizers` and
//                          `transformers` use), prebuilt .node binaries in the package.
//   --impl js              `@huggingface/tokenizers` (tokenizers.js), the pure
//                          JavaScript port used by transformers.js (called here with
//                          clean_up_tokenization_spaces false, to get the raw decoder
//                          output as the Rust decode gives it).
//   --check                also run the other implementation and report, on stderr, the
//                          lines where the two disagree (ids, ids_no_special, decoded,
//                          decoded_skip_special).
//
// Usage:
//   cd tools/text && npm ci                                   # once, needs the npm registry
//   node tools/text/make_tokenizer_fixtures.mjs \
//       --tokenizer tests/data/text/llama3/tokenizer.json \
//       --corpus tests/data/text/corpus.jsonl \
//       --out tests/data/text/llama3.fixtures.jsonl [--impl rust|js] [--check]
//       [--config path/to/tokenizer_config.json] [--modules DIR]
//   (positional form: make_tokenizer_fixtures.mjs TOKENIZER CORPUS OUT)
//
// Module directory: --modules DIR, else $SWITCHYARD_TOKREF_MODULES, else
// node_modules next to this script (tools/text/node_modules).
// tokenizer_config.json (read by --impl js, and for clean_up_tokenization_spaces)
// defaults to the file beside tokenizer.json when present.

import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

function usage(msg) {
  if (msg) process.stderr.write(`error: ${msg}\n`);
  process.stderr.write(
    "usage: make_tokenizer_fixtures.mjs --tokenizer tokenizer.json --corpus corpus.jsonl " +
      "--out out.jsonl [--impl rust|js] [--check] [--config tokenizer_config.json] [--modules DIR]\n",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { impl: "rust", check: false };
  const positional = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const take = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--tokenizer") opts.tokenizer = take();
    else if (a === "--corpus") opts.corpus = take();
    else if (a === "--out") opts.out = take();
    else if (a === "--config") opts.config = take();
    else if (a === "--modules") opts.modules = take();
    else if (a === "--impl") opts.impl = take();
    else if (a === "--check") opts.check = true;
    else if (a === "-h" || a === "--help") usage();
    else if (a.startsWith("--")) usage(`unknown flag ${a}`);
    else positional.push(a);
  }
  if (positional.length) {
    [opts.tokenizer, opts.corpus, opts.out] = [
      opts.tokenizer ?? positional[0],
      opts.corpus ?? positional[1],
      opts.out ?? positional[2],
    ];
  }
  if (!opts.tokenizer || !opts.corpus || !opts.out) usage("--tokenizer, --corpus and --out are required");
  if (!["rust", "js"].includes(opts.impl)) usage(`--impl must be rust or js, not ${opts.impl}`);
  return opts;
}

const scriptDir = path.dirname(fileURLToPath(import.meta.url));
const opts = parseArgs(process.argv.slice(2));
const modulesDir = path.resolve(
  opts.modules ?? process.env.SWITCHYARD_TOKREF_MODULES ?? path.join(scriptDir, "node_modules"),
);
if (!fs.existsSync(modulesDir)) {
  usage(`module directory ${modulesDir} does not exist (run \`npm ci\` in ${scriptDir}, or pass --modules)`);
}
// A require() that resolves packages from modulesDir only.
const requireFrom = createRequire(path.join(modulesDir, "__resolve_from_here__.js"));
function load(pkg) {
  try {
    return requireFrom(pkg);
  } catch (e) {
    process.stderr.write(`error: cannot load ${pkg} from ${modulesDir}: ${e.message}\n`);
    process.exit(1);
  }
}
function pkgVersion(pkg) {
  // Read the file directly: some packages' "exports" do not expose package.json.
  try {
    return JSON.parse(fs.readFileSync(path.join(modulesDir, pkg, "package.json"), "utf8")).version;
  } catch {
    return "?";
  }
}

const tokenizerPath = path.resolve(opts.tokenizer);
const tokenizerText = fs.readFileSync(tokenizerPath, "utf8");
const configPath = opts.config ?? path.join(path.dirname(tokenizerPath), "tokenizer_config.json");
const configJson = fs.existsSync(configPath) ? JSON.parse(fs.readFileSync(configPath, "utf8")) : {};

// Each backend: async encode(text, addSpecial) -> {ids, tokens}; async decode(ids, skip) -> string.
function makeRust() {
  const { Tokenizer } = load("tokenizers");
  const tok = Tokenizer.fromString(tokenizerText);
  return {
    name: `tokenizers@${pkgVersion("tokenizers")} (Rust)`,
    async encode(text, addSpecial) {
      const enc = await tok.encode(text, null, { addSpecialTokens: addSpecial });
      return { ids: Array.from(enc.getIds()), tokens: Array.from(enc.getTokens()) };
    },
    async decode(ids, skip) {
      return tok.decode(ids, skip);
    },
  };
}

function makeJs() {
  const { Tokenizer } = load("@huggingface/tokenizers");
  const tok = new Tokenizer(JSON.parse(tokenizerText), configJson);
  return {
    name: `@huggingface/tokenizers@${pkgVersion("@huggingface/tokenizers")} (JS)`,
    async encode(text, addSpecial) {
      const enc = tok.encode(text, { add_special_tokens: addSpecial });
      return { ids: Array.from(enc.ids, Number), tokens: Array.from(enc.tokens) };
    },
    async decode(ids, skip) {
      // tokenizers.js throws on an empty id list; the Rust decoder returns "".
      if (ids.length === 0) return "";
      // Raw decoder output, like the Rust decode; clean-up is applied below for both.
      return tok.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
    },
  };
}

const primary = opts.impl === "rust" ? makeRust() : makeJs();
const other = opts.check ? (opts.impl === "rust" ? makeJs() : makeRust()) : null;

async function run(backend, text) {
  const withSpecial = await backend.encode(text, true);
  const noSpecial = await backend.encode(text, false);
  const rec = {
    text,
    ids: withSpecial.ids,
    ids_no_special: noSpecial.ids,
    tokens: withSpecial.tokens,
    decoded: await backend.decode(withSpecial.ids, false),
    decoded_skip_special: await backend.decode(withSpecial.ids, true),
  };
  rec.decoded_clean_up = cleanUp ? cleanUpTokenization(rec.decoded) : rec.decoded;
  return rec;
}

// transformers.PreTrainedTokenizerBase.clean_up_tokenization, applied to the whole string.
function cleanUpTokenization(s) {
  return s
    .replaceAll(" .", ".")
    .replaceAll(" ?", "?")
    .replaceAll(" !", "!")
    .replaceAll(" ,", ",")
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}
const cleanUp = configJson.clean_up_tokenization_spaces === true;

const lines = fs.readFileSync(opts.corpus, "utf8").split("\n");
if (lines.length && lines[lines.length - 1] === "") lines.pop();
const out = [];
let mismatches = 0;
for (let n = 0; n < lines.length; n++) {
  let text;
  try {
    text = JSON.parse(lines[n]);
  } catch (e) {
    process.stderr.write(`error: ${opts.corpus}:${n + 1}: not JSON: ${e.message}\n`);
    process.exit(1);
  }
  if (typeof text !== "string") {
    process.stderr.write(`error: ${opts.corpus}:${n + 1}: expected a JSON string\n`);
    process.exit(1);
  }
  const rec = await run(primary, text);
  out.push(JSON.stringify(rec));
  if (other) {
    const o = await run(other, text);
    const diffs = ["ids", "ids_no_special", "decoded", "decoded_skip_special"].filter(
      (k) => JSON.stringify(rec[k]) !== JSON.stringify(o[k]),
    );
    if (diffs.length) {
      mismatches++;
      process.stderr.write(`line ${n + 1} ${JSON.stringify(text).slice(0, 80)}: differs in ${diffs.join(", ")}\n`);
      for (const k of diffs) {
        process.stderr.write(`  ${primary.name.padEnd(40)} ${k}: ${JSON.stringify(rec[k]).slice(0, 300)}\n`);
        process.stderr.write(`  ${other.name.padEnd(40)} ${k}: ${JSON.stringify(o[k]).slice(0, 300)}\n`);
      }
    }
  }
}
fs.mkdirSync(path.dirname(path.resolve(opts.out)), { recursive: true });
fs.writeFileSync(opts.out, out.join("\n") + "\n");
process.stderr.write(
  `${opts.out}: ${out.length} lines from ${path.basename(path.dirname(tokenizerPath))}/${path.basename(tokenizerPath)} with ${primary.name}` +
    (other ? `; ${mismatches} line(s) differ from ${other.name}` : "") +
    "\n",
);
