#!/usr/bin/env python3
"""Writes tests/data/reference_llamacpp.json: what llama.cpp computes for SmolLM2 on a set of prompts.

For each prompt (plain and chat-templated, short and ~1,500 tokens): the prompt's token ids, the greedy
continuation of 48 tokens (no stop at end-of-generation), the top-2 margin at every step, and the top-10
logits of the first step. Loom's model test (tests/engine/model/reference_test.cc) compares against it.

Needs llama.cpp's Python binding (built from source; 10-20 minutes on 2 cores):
  .venv/bin/pip install -r requirements-tools.txt
  .venv/bin/python tools/make_reference.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import argparse
import hashlib
import json
import os
import sys

import jinja2
import jinja2.sandbox
import numpy as np
from llama_cpp import Llama, __version__ as llama_cpp_version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 48
TOP = 10


def essay(name, words):
    path = os.path.join(ROOT, "..", "shared", "data", "haystack", "paul_graham_essays", name)
    with open(path, encoding="utf-8") as f:
        return " ".join(f.read().split()[:words])


def render_chat(template, messages):
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                            bos_token="<|im_start|>", eos_token="<|im_end|>")


def prompts(template):
    long_text = essay("gba.txt", 1150)
    long_text2 = essay("love.txt", 1100)
    plain = [
        ("plain_short", "The capital of France is"),
        ("plain_code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
        ("plain_numbers", "1, 2, 3, 5, 8, 13, 21, 34,"),
        ("plain_long", long_text + "\n\nIn summary, the essay argues that"),
    ]
    chats = [
        ("chat_short", [{"role": "user", "content": "What is the capital of France?"}]),
        ("chat_system", [{"role": "system", "content": "You are a terse assistant. Answer in one word."},
                         {"role": "user", "content": "Name a primary colour."}]),
        ("chat_multiturn", [{"role": "user", "content": "Hi! Who are you?"},
                            {"role": "assistant", "content": "I am SmolLM, an AI assistant."},
                            {"role": "user", "content": "Write a haiku about the sea."}]),
        ("chat_unicode", [{"role": "user", "content": "Traduis en français : « Good morning, my friend » 🌞"}]),
        ("chat_long", [{"role": "user", "content": long_text2 + "\n\nSummarise this essay in two sentences."}]),
    ]
    out = [{"name": n, "chat": False, "text": t} for n, t in plain]
    out += [{"name": n, "chat": True, "messages": m, "text": render_chat(template, m)} for n, m in chats]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "reference_llamacpp.json"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    with open(args.model, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    llm = Llama(model_path=args.model, n_ctx=4096, n_batch=512, n_threads=args.threads,
                logits_all=True, verbose=False, seed=0)
    template = llm.metadata["tokenizer.chat_template"]
    cases = []
    for p in prompts(template):
        ids = llm.tokenize(p["text"].encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        first = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top = np.argsort(-first, kind="stable")[:TOP]
        greedy, margins = [], []
        logits = first
        for step in range(STEPS):
            order = np.argsort(-logits, kind="stable")[:2]
            tok = int(order[0])
            greedy.append(tok)
            margins.append(float(logits[order[0]] - logits[order[1]]))
            if step + 1 < STEPS:
                llm.eval([tok])
                logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        case = dict(p)
        case.update(prompt_ids=[int(i) for i in ids], greedy=greedy, margins=margins,
                    top_ids=[int(i) for i in top], top_logits=[float(first[i]) for i in top],
                    greedy_text=llm.detokenize(greedy).decode("utf-8", errors="replace"))
        cases.append(case)
        print(f"{p['name']}: {len(ids)} prompt tokens -> {case['greedy_text'][:60]!r}", file=sys.stderr)
    doc = {"generator": f"llama-cpp-python {llama_cpp_version} (tools/make_reference.py)",
           "model_sha256": sha, "steps": STEPS, "cases": cases}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
    print(f"wrote {args.out} ({len(cases)} cases)", file=sys.stderr)


if __name__ == "__main__":
    main()
