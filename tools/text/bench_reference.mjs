// Encode throughput of the Hugging Face reference tokenizers over a JSONL file
// (one JSON string per line), for tools/bench/tokenizer_bench. Prints one line
// per implementation: "<name>\t<best seconds>\t<tokens>".
//   node bench_reference.mjs --tokenizer tokenizer.json --input texts.jsonl [--repeat 3] [--modules DIR]
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const scriptDir = path.dirname(fileURLToPath(import.meta.url));
const modules = opt("--modules", process.env.SWITCHYARD_TOKREF_MODULES ?? path.join(scriptDir, "node_modules"));
const requireFrom = createRequire(path.join(modules, "__resolve_from_here__.js"));
const tokenizerText = fs.readFileSync(opt("--tokenizer"), "utf8");
const texts = fs.readFileSync(opt("--input"), "utf8").split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l));
const repeat = Number(opt("--repeat", "3"));

async function time(name, encode) {
  let best = Infinity;
  let tokens = 0;
  for (let r = 0; r < repeat; r++) {
    const start = process.hrtime.bigint();
    tokens = 0;
    for (const t of texts) tokens += await encode(t);
    best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e9);
  }
  console.log(`${name}\t${best}\t${tokens}`);
}

try {
  const { Tokenizer } = requireFrom("@huggingface/tokenizers");
  const tok = new Tokenizer(JSON.parse(tokenizerText), {});
  await time("@huggingface/tokenizers 0.2.0 (JS)", (t) => tok.encode(t, { add_special_tokens: false }).ids.length);
} catch (e) {
  process.stderr.write(`JS reference unavailable: ${e.message}\n`);
}
try {
  const { Tokenizer } = requireFrom("tokenizers");
  const tok = Tokenizer.fromString(tokenizerText);
  await time("tokenizers 0.23.2 (Rust, Node binding)", async (t) => (await tok.encode(t, null, { addSpecialTokens: false })).getIds().length);
} catch (e) {
  process.stderr.write(`Rust reference unavailable: ${e.message}\n`);
}
