#!/usr/bin/env python3
"""Writes tests/data/tokenizer_cases.json: llama.cpp's token ids for SmolLM2 on ~50 diverse strings.

Loom's tokenizer model test (tests/engine/tokenizer/tokenizer_model_test.cc) must reproduce every id.
Inputs are stored as hex so that invalid UTF-8 survives; "text" is added when the input is valid UTF-8,
for readers. "decoded_hex" is llama.cpp's detokenization (pieces with special tokens rendered).

Needs llama.cpp's Python binding (see requirements-tools.txt):
  .venv/bin/python tools/tokenizer_cases.py [--model M] [--out tests/data/tokenizer_cases.json]
  .venv/bin/python tools/tokenizer_cases.py --fuzz 2000 --out /tmp/tokenizer_fuzz.json
The --fuzz form writes random strings instead (for a local differential run:
LOOM_TOKENIZER_CASES=/tmp/tokenizer_fuzz.json build/tests/engine/tokenizer/tokenizer_model_test).
"""
import argparse
import json
import os
import random

import llama_cpp
from llama_cpp import Llama

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

CHATML = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
          "<|im_end|>\n<|im_start|>user\nWhat is 2+2? Answer briefly.<|im_end|>\n"
          "<|im_start|>assistant\n")

# (name, input, parse_special). str inputs are UTF-8 encoded.
CASES = [
    ("hello", "Hello, world!", False),
    ("lowercase", "hello world", False),
    ("leading_space", " leading space", False),
    ("trailing_space", "trailing space ", False),
    ("pangram", "The quick brown fox jumps over the lazy dog.", False),
    ("digits", "12345", False),
    ("numbers", "3.14159 and 2,000,000 and 1e-9 and -42", False),
    ("number_spaces", " 1 22 333 4444 55555", False),
    ("contractions", "I'm sure you'll see they've done it; we'd, she's, it's, they're", False),
    ("contractions_case", "DON'T SHOUT'S 'quoted' rock'n'roll", False),
    ("multi_space", "multiple   spaces    here", False),
    ("newlines", "line1\nline2\n\nline4\r\nline5", False),
    ("tabs", "\ttab\tseparated\t\tvalues\t", False),
    ("only_spaces", "     ", False),
    ("only_newlines", "\n\n\n", False),
    ("mixed_whitespace", "mixed \n \t \r\n whitespace  \n  end", False),
    ("space_run", " " * 40 + "x" + "\t" * 5 + "y", False),
    ("python", "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
     False),
    ("cpp", "int main() { std::vector<int> v{1, 2, 3}; return v[0] != 0 ? 1 : 0; }", False),
    ("json", '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}', False),
    ("url", "https://example.com/path?query=1&b=2#frag", False),
    ("markdown", "# Title\n\n- item *bold* `code`\n> quote", False),
    ("emoji", "I \u2764\ufe0f \U0001F999s \U0001F468\u200d\U0001F469\u200d\U0001F467 \U0001F389\U0001F389",
     False),
    ("emoji_digits", "\U0001F600" + "1" + "\U0001F600" + "22", False),
    ("cjk", "你好，世界！これは日本語です。한국어 텍스트", False),
    ("arabic", "مرحبا بالعالم! هذا نص عربي ١٢٣", False),
    ("devanagari", "नमस्ते दुनिया", False),
    ("thai", "สวัสดีครับ", False),
    ("cyrillic_greek", "Привет мир, Καλημέρα κόσμε", False),
    ("combining", "e\u0301 a\u0308 Z\u0351\u0352 n\u0303o", False),
    ("accents", "café naïve résumé Ünïcödé", False),
    ("math", "\u2211(x\u00b2) \u2264 \u221e \u00b1 \u221a2 \u00bd \u2460\u2461", False),
    ("typography", "\u2019smart quotes\u2019 and \u201cdouble\u201d \u2014 dashes\u2026", False),
    ("unicode_spaces", "a\u00a0b\u0085c\u2028d\u3000e \u0085\u0085 f", False),
    ("unicode_15", "a\U0001E4F0\U0001E4F1b a\U00011F04\U00011F05 \U00031350\U00031351 "
     "\u180e\u180ex", False),
    ("long_words", "supercalifragilisticexpialidocious antidisestablishmentarianism", False),
    ("repeats", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa !!!!!!?????.... ----====", False),
    ("control_chars", "\x01\x02\x1b[31mred\x1b[0m\x7f", False),
    ("nul", "a\x00b\x00 \x00", False),
    ("invalid_ff", b"abc\xff\xfe def", False),
    ("invalid_lead", b"\xc3( x\xc3", False),
    ("truncated", b"euro \xe2\x82", False),
    ("overlong", b"\xc0\x80 over\xc1\xbflong", False),
    ("surrogate", b"\xed\xa0\x80 surrogate \xed\xbf\xbf", False),
    ("stray_continuation", b"\x80\x81 abc \xbf", False),
    ("chatml_special", CHATML, True),
    ("chatml_plain", CHATML, False),
    ("adjacent_specials", "<|im_end|><|im_start|><|endoftext|>", True),
    ("partial_specials", "<|im_start|im_end|> <|im_ <|im_end|", True),
    ("other_specials", "<reponame>repo<file_sep>x.py\n<gh_stars>10<jupyter_code>", True),
    ("empty", "", False),
]


def llama_would_abort(data):
    """True if llama.cpp's lenient UTF-8 decoder yields a codepoint above U+10FFFF (it then throws
    std::invalid_argument through the C API and the process aborts)."""
    i = 0
    while i < len(data):
        c = data[i]
        cont = lambda k: i + k < len(data) and (data[i + k] & 0xC0) == 0x80
        if c < 0x80 or c & 0x40 == 0:
            i += 1
        elif c & 0x20 == 0:
            i += 2 if cont(1) else 1
        elif c & 0x10 == 0:
            i += 3 if cont(1) and cont(2) else 1
        elif c & 0x08 == 0 and cont(1) and cont(2) and cont(3):
            v = ((c & 7) << 18) | ((data[i + 1] & 0x3F) << 12) | ((data[i + 2] & 0x3F) << 6) | (
                data[i + 3] & 0x3F)
            if v > 0x10FFFF:
                return True
            i += 4
        else:
            i += 1
    return False


def random_case(rng):
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789",
        " \t\n\r\x0b\x0c",
        "'\"!?.,;:-_()[]{}<>/\\|@#$%^&*+=~`",
        "éüñçßøåæœÀÉÎ",
        "你好世界日本語한국어",
        "مرحبا١٢٣",
        "\u0301\u0308\u0351\u200d\ufe0f",
        "\u00a0\u0085\u2028\u3000\u2009",
        "\U0001F600\U0001F999\U0001F468\u2764",
        "\u00b2\u00bd\u2460\u2167\u0663",
    ]
    specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_", "'s", "'ll", "'RE"]
    parts = []
    for _ in range(rng.randint(1, 12)):
        r = rng.random()
        if r < 0.08:
            parts.append(rng.choice(specials).encode())
        elif r < 0.18:
            parts.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 4))))
        elif r < 0.26:  # any Unicode scalar value, mostly from the BMP
            top = 0x10FFFF if rng.random() < 0.3 else 0xFFFF
            cps = [rng.randrange(top + 1) for _ in range(rng.randint(1, 4))]
            parts.append("".join(chr(c) for c in cps if not 0xD800 <= c <= 0xDFFF).encode())
        else:
            pool = rng.choice(pools)
            parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 8))).encode())
    return b"".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "tokenizer_cases.json"))
    ap.add_argument("--fuzz", type=int, default=0, help="write N random cases instead")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    llm = Llama(model_path=args.model, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    if args.fuzz:
        rng = random.Random(args.seed)
        cases = []
        while len(cases) < args.fuzz:
            data = random_case(rng)
            if not llama_would_abort(data):
                cases.append((f"fuzz_{len(cases)}", data, rng.random() < 0.5))
    else:
        cases = CASES

    out_cases = []
    for name, text, special in cases:
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        ids = llm.tokenize(data, add_bos=False, special=special)
        case = {"name": name}
        try:
            case["text"] = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        case.update({
            "text_hex": data.hex(),
            "parse_special": special,
            "ids": ids,
            "decoded_hex": llm.detokenize(ids, special=True).hex(),
        })
        out_cases.append(case)

    doc = {
        "model": os.path.basename(args.model),
        "generator": f"tools/tokenizer_cases.py, llama-cpp-python {llama_cpp.__version__}",
        "vocab_size": n_vocab,
        "bos_id": llama_cpp.llama_vocab_bos(vocab),
        "eos_id": llama_cpp.llama_vocab_eos(vocab),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "eog_ids": [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)],
        "cases": out_cases,
    }
    # One line per case keeps the file small and diffs readable.
    head = {k: v for k, v in doc.items() if k != "cases"}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
    lines.append(' "cases": [')
    body = [f"  {json.dumps(c, ensure_ascii=False)}" for c in doc["cases"]]
    lines.append(",\n".join(body))
    lines += [" ]", "}"]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(out_cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
