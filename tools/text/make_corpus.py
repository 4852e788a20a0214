# -*- coding: utf-8 -*-
# Writes tests/data/text/corpus.jsonl (one JSON string per line):
#   python3 tools/text/make_corpus.py tests/data/text/corpus.jsonl
# Edit the lists here, not the .jsonl. Lines must be unique and valid UTF-8 (no lone
# surrogates), since they are fed to the Rust reference as UTF-8.
import json, unicodedata
L = []
def add(*xs): L.extend(xs)

# --- edge cases
add("", " ", "  ", "     ", "\t", "\n", "\r\n", " \n ", "a", "A", "I")

# --- English prose
add(
 "Hello world",
 "Hello, world!",
 "The quick brown fox jumps over the lazy dog.",
 "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.",
 "Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse, I thought I would sail about a little.",
 "Tokenizers split text into pieces; models see only the ids.",
 "Mr. Smith paid $4.50 for 3 apples (roughly €4.10) on Jan. 5th, 2024 at 10:30 a.m.",
 "\"Quoted text,\" she said, 'and single quotes' too.",
 "UPPERCASE WORDS AND MiXeD CaSe WoRdS",
 "e.g., i.e., etc., vs. ... and the ellipsis… character",
 "semi;colons: colons, dashes - en – em — and (parentheses) [brackets] {braces} <angles>",
 "Hyphenated-words like state-of-the-art and well-known",
)

# --- contractions
add(
 "It's", "don't", "they're", "we've", "I'm", "you'll", "she'd",
 "IT'S DON'T THEY'RE WE'VE I'M YOU'LL SHE'D",
 "It'S DoN'T tHeY'Re We'Ve i'M yOu'Ll ShE'd",
 "I'd've thought you'd've known y'all'd",
 "don’t won’t it’s (typographic apostrophe U+2019)",
 "'s 't 're 've 'm 'll 'd",
 "rock 'n' roll, 'tis the season, '90s music",
 "The cat's toy and the cats' toys",
)

# --- code
add(
 "def foo(x):\n    return x + 1\n",
 "import numpy as np\n\nclass Model:\n    def __init__(self, n: int = 4) -> None:\n        self.w = np.zeros((n, n), dtype=np.float32)\n",
 "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(f\"{i=}\")  # even\n",
 "    indented = True\n        more_indented = [1, 2, 3]\n",
 "lambda x: x**2 if x >= 0 else -x  # comment with trailing spaces   ",
 "#include <iostream>\n\nint main() {\n  std::cout << \"Hello\" << std::endl;\n  return 0;\n}\n",
 "template <typename T>\nstd::vector<T> f(const std::vector<T>& v) noexcept { return {v.begin(), v.end()}; }",
 "auto p = std::make_unique<Foo>(); p->bar(); if (a && b || !c) { x <<= 2; y >>= 1; }",
 "/* block comment */ // line comment\n#define MAX(a, b) ((a) > (b) ? (a) : (b))",
 "{\"name\": \"switchyard\", \"version\": \"0.1.0\", \"tags\": [\"a\", \"b\"], \"n\": 42, \"ok\": true, \"x\": null}",
 "{\n  \"messages\": [\n    {\"role\": \"user\", \"content\": \"Hi!\"}\n  ]\n}",
 "[1,2,3,{\"a\":{\"b\":[]}}]",
 "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
 "fn main() { let v: Vec<u8> = vec![0xFF, 0x00]; println!(\"{:?}\", v); }",
 "$ ls -la /usr/local/bin | grep -E '^-rwx' && echo \"done\" > /dev/null 2>&1",
 "<div class=\"container\"><p>Hello &amp; welcome</p></div>",
)

# --- whitespace runs
add(
 "two  spaces", "three   spaces", "many          spaces here",
 "trailing space ", "trailing spaces   ", "   leading spaces",
 "tab\tseparated\tvalues", "tabs\t\t\tand spaces \t \t mixed",
 "line one\nline two\n\nline four\n\n\n",
 "windows\r\nline\r\nendings\r\n", "old mac\rline endings\r",
 "\n\n\nleading newlines", "trailing newlines\n\n\n\n",
 "space before newline \nand after\n next",
 "   \n\t\n  \n",
 "a" + " " * 40 + "b",
 "\u00a0non-breaking\u00a0space and narrow\u202fnbsp",
 "ideographic\u3000space and em\u2003space and thin\u2009space",
 "zero\u200bwidth\u200cjoiner\u200dtest and BOM\ufeffinside",
 "vertical\u000btab and form\u000cfeed",
)

# --- digits and numbers
add(
 "0", "7", "42", "123", "1234", "12345", "123456789",
 "3.14159265358979323846264338327950288419716939937510",
 "1,000,000 and 1.000.000 and 1 000 000",
 "Phone: +1 (555) 010-9999, ext. 12",
 "2024-01-15T13:45:30.123Z",
 "version 1.2.3-rc.4+build.567",
 "0x7fffffff 0b1010 1e-9 -273.15 6.022e23",
 "The year 1999 and the year 2000; room 101; 007",
 "١٢٣٤٥ (Arabic-Indic digits) ४५६ (Devanagari digits) １２３ (fullwidth digits)",
 "½ ¼ ¾ ² ³ ⅓ Ⅻ ⑦",
 "99999999999999999999999999999999999999999999999999",
)

# --- CJK
add(
 "你好，世界！",
 "我们今天去公园散步，天气非常好。",
 "機器學習是人工智慧的一個分支。",
 "こんにちは、世界！",
 "東京は日本の首都です。カタカナとひらがなを混ぜる。",
 "ｶﾀｶﾅ (halfwidth katakana) and ＡＢＣ (fullwidth latin)",
 "안녕하세요, 세계!",
 "한국어 문장은 띄어쓰기를 사용합니다.",
 "Mixed 中文 and English 混合 text with 日本語 too",
 "𠀀𠀁𠀂 (CJK Extension B) 𪚥",
)

# --- emoji
add(
 "😀", "I love pizza 🍕 and tacos 🌮!",
 "👍👍🏻👍🏼👍🏽👍🏾👍🏿",
 "👨‍👩‍👧‍👦 family (ZWJ sequence)",
 "🏳️‍🌈 🏴‍☠️ 👩🏽‍💻 🧑‍🤝‍🧑",
 "🇺🇸🇯🇵🇩🇪 flags",
 "❤️ ♥ ☺️ ✔️ (variation selectors)",
 "🫠🥹🪿 (newer emoji)",
 "emoji🙂without🙂spaces",
 "1️⃣ #️⃣ *️⃣ keycaps",
)

# --- accents / combining, NFC vs NFD
nfc = ["café", "naïve résumé", "Crème brûlée à la française", "São Paulo, Zürich, Ångström, Øresund", "Ελληνικά: άλφα βήτα", "Việt Nam tiếng Việt"]
for s in nfc:
    add(unicodedata.normalize("NFC", s), unicodedata.normalize("NFD", s))
add(
 "e\u0301 vs \u00e9 (combining acute vs precomposed)",
 "a\u0300\u0301\u0302\u0303\u0304 stacked combining marks",
 "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O\u0342\u030c\u030c\u0358\u0328\u0335\u0339\u033b\u031d\u0333!",
 "ﬁ ﬂ ligatures, ℌ ℍ ℕ letterlike, ™ ℃ №",
 "Straße STRASSE ß ẞ",
 "İstanbul ı I i (Turkish dotted/dotless)",
)

# --- other scripts
add(
 "Привет, мир! Как дела?",
 "Съешь же ещё этих мягких французских булок, да выпей чаю.",
 "مرحبا بالعالم",
 "اللغة العربية تكتب من اليمين إلى اليسار.",
 "नमस्ते दुनिया",
 "हिन्दी एक भारतीय भाषा है।",
 "שלום עולם",
 "สวัสดีชาวโลก",
 "Γειά σου Κόσμε",
 "ქართული ენა",
)

# --- URLs / emails / paths
add(
 "https://www.example.com/path/to/page?query=1&b=two#section",
 "Visit http://localhost:8080/api/v1/jobs/ft-7f3a for details.",
 "mailto:someone@example.org and user.name+tag@sub.domain.co.uk",
 "C:\\Users\\me\\Documents\\file.txt and /home/me/.config/app.toml",
 "ftp://ftp.example.net/pub/file-1.2.3.tar.gz",
)

# --- markdown
add(
 "# Heading 1\n## Heading 2\n### Heading 3",
 "- item one\n- item two\n  - nested item\n* star item\n1. numbered",
 "**bold** *italic* ~~strike~~ `inline code` [link](https://example.com)",
 "```python\nprint('hi')\n```",
 "| col1 | col2 |\n|------|------|\n| a    | b    |",
 "> quoted text\n>> nested quote\n\n---\n\n![alt text](image.png)",
)

# --- special tokens in text (various families)
add(
 "<|begin_of_text|>Hello",
 "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
 "Hello<|eot_id|>world",
 "Hello <|eot_id|> world",
 "<|end_of_text|>",
 "<|reserved_special_token_5|>",
 "<s>Hello</s>",
 "<s> Hello </s>",
 "<s>[INST] What is 2+2? [/INST] 4</s>",
 " <s>",
 "text<s>text</s>text",
 "<unk> is an unknown token",
 "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
 "<think>\nLet me think.\n</think>\n\nThe answer is 4.",
 "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
 "<|endoftext|>",
 "a<|endoftext|>b",
 "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
 "<bos>",
 "<pad><eos><mask>",
 "<unused0> <unused99>",
 "<|fim_prefix|>def f():<|fim_suffix|>\n    return 1<|fim_middle|>",
 "[CLS] [SEP] [MASK] [PAD] [UNK]",
 "<|im_start <|im_end |> <s <|eot_id| partial special tokens",
 "<|eot_id|><|eot_id|><|eot_id|>",
 "<s><s></s></s>",
)

# --- tokenizer-internal characters appearing literally
add(
 "\u2581 lower one eighth block \u2581\u2581 (SentencePiece space)",
 "Ġ Ċ ĉ (GPT-2 byte-level symbols)",
 "<0x41> <0xE4> byte fallback tokens as text",
 "##ing ##s wordpiece markers",
)

# --- odd characters
add(
 "\u0000 NUL and \u0001 SOH and \u001b[31mANSI\u001b[0m",
 "\ufffd replacement character",
 "\ue000\uf8ff private use",
 "𝄞 𝕳𝖊𝖑𝖑𝖔 𝐁𝐨𝐥𝐝 (math alphanumerics)",
 "ꙮ ꧁ ᚠᚢᚦ ☃ ⚙ ∑∫√∞ ≠ ≤ ≥",
 "Supercalifragilisticexpialidocious",
 "pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
 "a" * 300,
 "ab" * 150,
 "🙂" * 50,
 "!!!!!!???...,,,;;;",
 "=" * 80,
 "-" * 64 + "\n" + "#" * 64,
)

# --- longer multi-paragraph mixed text
add(
 "Paragraph one about tokenization.\n\nParagraph two: 中文, русский, العربية, 😀.\n\n\tIndented line with code `x = 1`.\n",
 "User: What's the capital of France?\nAssistant: It's Paris. The population is about 2,100,000 (2023).",
 " ".join(["word%d" % i for i in range(200)]),
)

# --- added-token flags (used by the synthetic gpt2-added variant)
add(
 "The <mask> sat on the mat.",
 "a <|sep|>   b and c<|sep|>d",
 "x   <pad>   y",
 "hello world, Hello World, ｈｅｌｌｏ ｗｏｒｌｄ, hello  world",
 "cat concatenate cats the cat. (cat) cat's",
 "ΔΔ x Δy Δ",
 "ℌello Hello",
)

# basic checks
assert len(L) == len(set(L)), [x for x in L if L.count(x) > 1]
import sys
for s in L:
    s.encode("utf-8")  # no lone surrogates
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for s in L:
        f.write(json.dumps(s, ensure_ascii=False) + "\n")
print(len(L), "lines", file=sys.stderr)
