"""Synthetic multi-passkey samples for DuoAttention calibration (the paper's training data, scaled).

Like the reference's MultiplePasskeyRetrievalDataset (duo_attn/data.py), at the token level: a
haystack (Paul Graham essays, ../shared/data/haystack/paul_graham_essays) with `num_passkeys`
needles inserted at sorted random depths in [0.05, 0.95], then one question and answer per
needle, in order. Differences from the reference: numeric keys and Loom's passkey wording
(tools/duo/passkey_prompt.h) instead of 32 NATO-alphabet words, and a few keys on 0.5-1K tokens
instead of 10 keys on 1K-32K tokens.

    <header> <haystack ...> \\n\\nThe first pass key is 71432. Remember it. 71432 is the first
    pass key.\\n\\n <haystack ...> ... \\n\\nWhat is the first pass key? The first pass key is
    71432.\\nWhat is the second pass key? ...

`supervised` marks the positions whose hidden state is compared (the loss): with
supervise="answer" the positions that predict an answer token (each key's digits and the period
after them; the paper's "supervised on the answer tokens"); with "qa" every position of the
question-and-answer part, as the reference's labels (-100 elsewhere) do. Everything is
deterministic for a given seed.

    tok = load_tokenizer("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    gen = PasskeySamples(tok, "../shared/data/haystack/paul_graham_essays", seed=0)
    s = gen.sample(length=1024)        # s.tokens (list[int]), s.supervised (list[int]), s.keys
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.mapreduce.gguf_tokenizer import GgufTokenizer  # noqa: E402  (the repo's tokenizer)

ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
            "tenth"]
HEADER = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
          "it. I will quiz you about the important information there.\n")
NEEDLE = "\n\nThe {o} pass key is {k}. Remember it. {k} is the {o} pass key.\n\n"
QUESTION = "What is the {o} pass key? The {o} pass key is"
ANSWER = " {k}."


def load_tokenizer(model_path: str) -> GgufTokenizer:
    return GgufTokenizer.from_file(model_path)


@dataclass
class Sample:
    tokens: list[int]
    supervised: list[int]      # positions whose final hidden state enters the loss
    keys: list[str]
    depths: list[float]


class PasskeySamples:
    """Builds samples of a requested token length from the haystack essays."""

    def __init__(self, tok: GgufTokenizer, haystack_dir: str, seed: int = 0, num_passkeys: int = 4,
                 key_digits: int = 5, supervise: str = "answer"):
        if not 1 <= num_passkeys <= len(ORDINALS):
            raise ValueError(f"num_passkeys must be in 1..{len(ORDINALS)}")
        if supervise not in ("answer", "qa"):
            raise ValueError("supervise must be 'answer' or 'qa'")
        self.tok = tok
        self.files = sorted(str(p) for p in Path(haystack_dir).glob("*.txt"))
        if not self.files:
            raise FileNotFoundError(f"no *.txt haystack files in {haystack_dir}")
        self.rng = np.random.default_rng(seed)
        self.num_passkeys = num_passkeys
        self.key_digits = key_digits
        self.supervise = supervise
        self._cache: dict[str, list[int]] = {}

    def _essay(self, path: str) -> list[int]:
        if path not in self._cache:
            with open(path, encoding="utf-8") as f:
                text = " ".join(f.read().split())   # one paragraph: no stray layout tokens
            self._cache[path] = self.tok.encode(text + "\n\n")
        return self._cache[path]

    def _haystack(self, n: int) -> list[int]:
        """n haystack tokens: essays in file order from a random one, wrapping around."""
        out: list[int] = []
        i = int(self.rng.integers(len(self.files)))
        while len(out) < n:
            out += self._essay(self.files[i % len(self.files)])
            i += 1
        return out[:n]

    def sample(self, length: int) -> Sample:
        """A sample of exactly `length` tokens (the haystack fills what the rest leaves)."""
        lo, hi = 10 ** (self.key_digits - 1), 10 ** self.key_digits
        keys = [str(int(self.rng.integers(lo, hi))) for _ in range(self.num_passkeys)]
        enc = self.tok.encode
        needles = [enc(NEEDLE.format(o=ORDINALS[i], k=k)) for i, k in enumerate(keys)]
        qa: list[int] = []
        sup_rel: list[int] = []   # supervised positions relative to the QA part's start
        for i, k in enumerate(keys):
            q = enc(("\n" if i else "") + QUESTION.format(o=ORDINALS[i]))
            a = enc(ANSWER.format(k=k))
            start = len(qa)
            qa += q + a
            if self.supervise == "answer":   # positions predicting each answer token
                sup_rel += list(range(start + len(q) - 1, start + len(q) + len(a) - 1))
            else:
                sup_rel += list(range(start, start + len(q) + len(a)))
        header = enc(HEADER)
        tail = enc("\n\n")
        n_hay = length - len(header) - sum(map(len, needles)) - len(tail) - len(qa)
        if n_hay < 32:
            raise ValueError(f"length {length} is too short for {self.num_passkeys} passkeys")
        hay = self._haystack(n_hay)
        depths = sorted(float(d) for d in self.rng.uniform(0.05, 0.95, self.num_passkeys))
        ctx: list[int] = []
        last = 0
        for d, nd in zip(depths, needles):
            cut = int(n_hay * d)
            ctx += hay[last:cut] + nd
            last = cut
        ctx += hay[last:]
        prefix = header + ctx + tail
        tokens = prefix + qa
        assert len(tokens) == length, (len(tokens), length)
        return Sample(tokens, [len(prefix) + p for p in sup_rel], keys, depths)


def default_haystack_dir() -> str:
    return os.path.join(ROOT.parent, "shared", "data", "haystack", "paul_graham_essays")
