#!/usr/bin/env python3
"""Checks `switchyard text encode|decode` against every fixture in tests/data/text.

Tokenizers come from tests/data/text/<name>/ or, for those not committed (Llama 3,
Gemma 3), from tools/text/node_modules/@lenml/tokenizer-<name>/models/ after `npm ci`.
Prints one line per tokenizer and mode; exits 1 on any mismatch.
Usage: python3 tools/text/check_parity.py [--binary build/services/switchyard] [NAME...]
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data", "text")
MODULES = os.path.join(ROOT, "tools", "text", "node_modules", "@lenml")


def tokenizer_path(name):
    local = os.path.join(DATA, name)
    if os.path.isfile(os.path.join(local, "tokenizer.json")):
        return local
    packaged = os.path.join(MODULES, f"tokenizer-{name}", "models")
    if os.path.isfile(os.path.join(packaged, "tokenizer.json")):
        return packaged
    return None


def run(binary, args, lines):
    out = subprocess.run([binary, "text"] + args, input="".join(l + "\n" for l in lines),
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None, out.stderr.strip()
    return [json.loads(l) for l in out.stdout.splitlines()], ""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.path.join(ROOT, "build", "services", "switchyard"))
    parser.add_argument("names", nargs="*")
    args = parser.parse_args()
    names = args.names or sorted(f[:-len(".fixtures.jsonl")] for f in os.listdir(DATA)
                                 if f.endswith(".fixtures.jsonl"))
    failed = False
    for name in names:
        path = tokenizer_path(name)
        if path is None:
            print(f"{name}: tokenizer not available (run: cd tools/text && npm ci)")
            continue
        fixtures = [json.loads(l) for l in open(os.path.join(DATA, f"{name}.fixtures.jsonl"))]
        texts = [json.dumps(f["text"]) for f in fixtures]
        checks = [("encode", ["encode", "--tokenizer", path], texts, "ids"),
                  ("encode --no-special", ["encode", "--no-special", "--tokenizer", path], texts,
                   "ids_no_special"),
                  ("decode", ["decode", "--tokenizer", path],
                   [json.dumps(f["ids"]) for f in fixtures], "decoded")]
        for label, cli, lines, key in checks:
            got, error = run(args.binary, cli, lines)
            if got is None:
                print(f"{name} {label}: error: {error}")
                failed = True
                continue
            bad = [i for i, (f, g) in enumerate(zip(fixtures, got)) if f[key] != g]
            print(f"{name} {label}: {len(fixtures) - len(bad)}/{len(fixtures)} lines identical")
            for i in bad[:3]:
                print(f"  line {i + 1}: {fixtures[i]['text']!r:.60}\n    want {fixtures[i][key]!r:.120}"
                      f"\n    got  {got[i]!r:.120}")
            failed |= bool(bad)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
