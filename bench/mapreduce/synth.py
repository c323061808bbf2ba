#!/usr/bin/env python3
"""Synthetic long-context retrieval tasks in InfiniteBench's format: passkey, number_string and
kv_retrieval at a target length in the model's tokens.

    .venv/bin/python bench/mapreduce/synth.py --task passkey --length 128k --n 20 --seed 0 --out FILE

Each output line is one example, {"id", "context", "input", "answer", "options"} as in
InfiniteBench's released data (answer: a one-element list; options: empty), plus "length" (the
prompt's tokens), "target_length" and "depth" (where the needle sits, 0 = start, 1 = end of the
context). The prompt is InfiniteBench's template for the task (PROMPT_TEMPLATES, GPT-4 style,
`render_prompt`) with the context and the question filled in; "length" counts its tokens with the
model's own tokenizer, without special tokens or chat template. Lengths are 1024-based (16k =
16384 tokens) and the generator fills each prompt to between 99% and 100% of the target.

* passkey: "The pass key is K. Remember it. K is the pass key." (K: 5 random digits) hidden in
  Paul Graham essays; question "What is the pass key?".
* number_string: the same with "The sequence of digits is K. ..." and a 10-digit K built as
  InfiniteBench builds it (5 random digits, then 5 digits each repeating a random earlier
  position); question "What is the sequence of digits?".
* kv_retrieval: context "JSON data:\\n{...}" holding random UUID4 keys and values; input
  'Key: "<key>"\\nThe value associated with the specified key is: '.

The needle's depth (passkey, number_string) and the asked key's position (kv_retrieval) are drawn
uniformly by a random generator seeded with (seed, task, length, example index), so example i is
the same whatever --n is, and the files are identical on every machine. Tokens are counted with
gguf_tokenizer (the GGUF file's vocabulary and merges in pure Python, identical to llama.cpp).
"""
from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import sys
import uuid
from functools import lru_cache
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.mapreduce import gguf_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
# The team's shared data sits beside the checkout: ../shared/data/.
DEFAULT_HAYSTACK = Path(os.environ.get(
    "LOOM_HAYSTACK_DIR", ROOT.parent / "shared" / "data" / "haystack" / "paul_graham_essays"))

TASKS = ("passkey", "number_string", "kv_retrieval")
LENGTHS = {"16k": 16 * 1024, "32k": 32 * 1024, "64k": 64 * 1024, "128k": 128 * 1024}
# The generator fills a prompt to [target * (1 - FILL_SLACK), target].
FILL_SLACK = 0.01

# InfiniteBench's prompt templates (src/prompt.py, gpt4_templates) for these tasks.
PROMPT_TEMPLATES = {
    "passkey": ("There is an important info hidden inside a lot of irrelevant text. Find it and "
                "memorize them. I will quiz you about the important information there.\n\n"
                "{context}\n\n{input}"),
    "number_string": ("There is an important info hidden inside a lot of irrelevant text. Find "
                      "it. I will quiz you about the important information there.\n\n"
                      "{context}\n\n{input}"),
    "kv_retrieval": ("Extract the value corresponding to the specified key in the JSON object "
                     "below.\n\n{context}\n\n{input}"),
}
QUESTIONS = {"passkey": "What is the pass key?", "number_string": "What is the sequence of digits?"}
NEEDLES = {
    "passkey": "The pass key is {key}. Remember it. {key} is the pass key.",
    "number_string": "The sequence of digits is {key}. Remember it. {key} is the sequence of digits.",
}
KV_INPUT = 'Key: "{key}"\nThe value associated with the specified key is: '


def render_prompt(example: dict, task: str) -> str:
    """The full prompt InfiniteBench gives the model for `example`."""
    return PROMPT_TEMPLATES[task].format(context=example["context"], input=example["input"])


def parse_length(text: str | int) -> int:
    """'128k' / '128K' -> 131072; a plain integer is a token count."""
    s = str(text).strip().lower()
    if s in LENGTHS:
        return LENGTHS[s]
    if s.endswith("k") and s[:-1].isdigit():
        return int(s[:-1]) * 1024
    if s.isdigit():
        return int(s)
    raise ValueError(f"bad length {text!r}; use 16k, 32k, 64k, 128k or a token count")


def _fix_cp1252(text: str) -> str:
    """The essays carry a few Windows-1252 characters read as C1 controls (\\x97 for an em
    dash, \\x92 for an apostrophe); map them back."""
    out = []
    for ch in text:
        if "\x80" <= ch <= "\x9f":
            try:
                ch = bytes([ord(ch)]).decode("cp1252")
            except UnicodeDecodeError:
                ch = " "
        out.append(ch)
    return "".join(out)


@lru_cache(maxsize=4)
def load_essays(directory: str) -> tuple[str, ...]:
    """The haystack documents, in file-name order, whitespace-trimmed."""
    files = sorted(Path(directory).glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no *.txt haystack files in {directory}")
    return tuple(_fix_cp1252(f.read_text(encoding="utf-8")).strip() for f in files)


class _Counter:
    """Token counting with the model's tokenizer, plus word-boundary prefix counts."""

    def __init__(self, model: str | Path):
        self.tok = gguf_tokenizer.load(str(model))

    def count(self, text: str) -> int:
        return self.tok.count(text)

    def prefix_table(self, text: str) -> tuple[list[int], list[int]]:
        """For each pre-token word boundary: (tokens before it, characters before it)."""
        toks, chars = [0], [0]
        for w in self.tok.pre_tokenize(text):
            toks.append(toks[-1] + len(self.tok.bpe(w)))
            chars.append(chars[-1] + len(w))
        return toks, chars


def _rng(seed: int, task: str, target: int, index: int) -> random.Random:
    # A string seed is hashed with SHA-512: stable across runs, machines and PYTHONHASHSEED.
    return random.Random(f"loom-synth:{seed}:{task}:{target}:{index}")


def _draw_key(task: str, rng: random.Random) -> str:
    digits = [str(rng.randint(0, 9)) for _ in range(5)]
    if task == "number_string":
        # InfiniteBench: five times, repeat the digit at a random position next to itself.
        for k in range(5):
            pos = rng.randint(0, 5 + k - 1)
            digits.insert(pos, digits[pos])
    return "".join(digits)


def _starts_sentence(text: str, i: int) -> bool:
    """Whether a sentence starts at `i` (2 <= i <= len(text)): just after a space or newline that
    follows ".", "?" or "!", or after a blank line (the essays hard-wrap their lines, so a lone
    newline is not a boundary)."""
    prev2, prev = text[i - 2], text[i - 1]
    return (prev in " \n" and prev2 in ".?!") or (prev == "\n" and prev2 == "\n")


def _sentence_boundary(text: str, pos: int) -> int:
    """The first sentence start at or after `pos`; len(text) when there is none."""
    if pos <= 0:
        return 0
    return next((i for i in range(max(pos, 2), len(text)) if _starts_sentence(text, i)), len(text))


def _sentence_start_before(text: str, pos: int) -> int:
    """The last sentence start at or before `pos`; 0 when there is none."""
    return next((i for i in range(min(pos, len(text)), 1, -1) if _starts_sentence(text, i)), 0)


def _haystack(essays: tuple[str, ...], rng: random.Random, min_chars: int) -> str:
    """Essays in a random order (reshuffled each pass) until at least `min_chars`."""
    parts, size = [], 0
    while size < min_chars:
        order = list(range(len(essays)))
        rng.shuffle(order)
        for i in order:
            parts.append(essays[i])
            size += len(essays[i]) + 2
            if size >= min_chars:
                break
    return "\n\n".join(parts)


def make_needle_example(task: str, target: int, index: int, seed: int, counter: _Counter,
                        essays: tuple[str, ...]) -> dict:
    rng = _rng(seed, task, target, index)
    depth_draw = rng.random()
    question = QUESTIONS[task]
    # Enough text for the target at a pessimistic 5 characters a token (essays: ~4.2).
    hay = _haystack(essays, rng, min_chars=target * 5 + 4096)
    key = _draw_key(task, rng)
    while key in hay:
        key = _draw_key(task, rng)
    needle = NEEDLES[task].format(key=key)
    toks, chars = counter.prefix_table(hay)
    if toks[-1] < target:
        raise RuntimeError("haystack too short")

    overhead = counter.count(PROMPT_TEMPLATES[task].format(context=needle + " ", input=question))
    budget = target - overhead
    for _ in range(8):
        cut = bisect.bisect_right(toks, budget) - 1
        body = hay[:chars[cut]].rstrip()
        pos = int(round(depth_draw * len(body)))
        at = _sentence_boundary(body, pos)
        if at >= len(body):
            # No sentence starts after pos: the body ends inside a sentence (it is cut at a token
            # count), so the needle goes before that last sentence, never glued to its end.
            at = _sentence_start_before(body, pos)
        context = body[:at] + needle + " " + body[at:]
        example = {"context": context, "input": question}
        length = counter.count(render_prompt(example, task))
        if target * (1 - FILL_SLACK) <= length <= target:
            break
        budget += target - length - (2 if length > target else 0)
    else:
        raise RuntimeError(f"could not fit {task} example {index} to {target} tokens")
    return {"id": index, "context": context, "input": question, "answer": [key], "options": [],
            "length": length, "target_length": target,
            "depth": round(at / max(1, len(body)), 4)}


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _kv_context(pairs: list[tuple[str, str]]) -> str:
    # InfiniteBench writes the object by hand in json.dumps's default layout.
    return "JSON data:\n" + json.dumps(dict(pairs), ensure_ascii=False)


def make_kv_example(target: int, index: int, seed: int, counter: _Counter) -> dict:
    rng = _rng(seed, "kv_retrieval", target, index)
    pos_draw = rng.random()
    pair_rng = random.Random(rng.getrandbits(64))
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()

    def grow(n: int) -> None:
        while len(pairs) < n:
            k, v = _uuid(pair_rng), _uuid(pair_rng)
            if k in seen or v in seen:
                continue
            seen.update((k, v))
            pairs.append((k, v))

    # Tokens per pair, measured on a first batch; then fit the count to the target.
    grow(64)
    per_pair = (counter.count(_kv_context(pairs)) - counter.count(_kv_context([]))) / len(pairs)
    probe = KV_INPUT.format(key=pairs[0][0])
    overhead = counter.count(PROMPT_TEMPLATES["kv_retrieval"].format(context=_kv_context([]),
                                                                    input=probe))
    n = max(1, int((target - overhead) / per_pair))
    # A pair is several dozen tokens: at short targets the slack can be narrower than one pair.
    lo_ok = target - max(target * FILL_SLACK, 2 * per_pair)
    for _ in range(12):
        grow(n)
        used = pairs[:n]
        ask = min(n - 1, int(pos_draw * n))
        example = {"context": _kv_context(used), "input": KV_INPUT.format(key=used[ask][0])}
        length = counter.count(render_prompt(example, "kv_retrieval"))
        if lo_ok <= length <= target:
            break
        step = (target - length) / per_pair
        n = max(1, n + (int(step) if step > 0 else int(step) - 1))
    else:
        raise RuntimeError(f"could not fit kv_retrieval example {index} to {target} tokens")
    return {"id": index, "context": example["context"], "input": example["input"],
            "answer": [used[ask][1]], "options": [], "length": length, "target_length": target,
            "depth": round(ask / max(1, n - 1), 4)}


def generate(task: str, length: str | int, n: int, seed: int = 0, model: str | Path = DEFAULT_MODEL,
             haystack_dir: str | Path = DEFAULT_HAYSTACK) -> list[dict]:
    """`n` examples of `task` at `length` tokens."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    target = parse_length(length)
    counter = _Counter(model)
    if task == "kv_retrieval":
        return [make_kv_example(target, i, seed, counter) for i in range(n)]
    essays = load_essays(str(haystack_dir))
    return [make_needle_example(task, target, i, seed, counter, essays) for i in range(n)]


def write_jsonl(examples: list[dict], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex, ensure_ascii=False) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", required=True, choices=TASKS)
    ap.add_argument("--length", required=True, help="16k, 32k, 64k, 128k or a token count")
    ap.add_argument("--n", type=int, default=20, help="number of examples (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output .jsonl")
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="GGUF whose tokenizer counts tokens")
    ap.add_argument("--haystack", default=str(DEFAULT_HAYSTACK),
                    help="directory of *.txt haystack documents (env LOOM_HAYSTACK_DIR)")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be positive")
    examples = generate(args.task, args.length, args.n, args.seed, args.model, args.haystack)
    write_jsonl(examples, args.out)
    lengths = [e["length"] for e in examples]
    print(f"wrote {len(examples)} {args.task} examples to {args.out}: "
          f"{min(lengths)}-{max(lengths)} tokens (target {parse_length(args.length)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
