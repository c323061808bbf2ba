"""The model's own tokenizer in pure Python: vocabulary and merges read from the GGUF file.

Supports GPT-2 style byte-level BPE models (`tokenizer.ggml.model == "gpt2"`) with the pre-tokenizers
that split on \\p{N} and then on the GPT-2 regex (llama.cpp's "smollm", "starcoder", ...) or on the
GPT-2 regex alone ("gpt2", "default"). That covers SmolLM2, Loom's default model. The synthetic task
generator (synth.py) counts tokens with it, so lengths are the model's real token counts and the
generated files are the same on every machine (no llama.cpp build, no extra package).

Parity with llama.cpp is tested against tests/data/tokenizer_cases.json (llama.cpp's ids) and, where
llama-cpp-python is installed, on the whole Paul Graham haystack (tests/bench/mapreduce).

    tok = GgufTokenizer.from_file("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ids = tok.encode("The pass key is 12345.")   # no BOS: SmolLM2's add_bos_token is false
    n = tok.count("...")
"""
from __future__ import annotations

import mmap
import re
import struct
import sys
import unicodedata
from functools import lru_cache
from pathlib import Path

# GGUF metadata value types (gguf.md).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def gguf_string(m, p: int) -> tuple[str, int]:
    """The GGUF string at offset `p` of the mapped file `m`, and the offset after it."""
    (n,) = struct.unpack_from("<Q", m, p)
    return m[p + 8:p + 8 + n].decode("utf-8", errors="surrogateescape"), p + 8 + n


def parse_gguf_header(m, path: str | Path, prefix: str = "") -> tuple[dict, int, int]:
    """Header and key/value metadata of the mapped GGUF file `m`: (the metadata whose keys start
    with `prefix`, the tensor count, the offset where the tensor infos begin)."""
    if m[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    (version,) = struct.unpack_from("<I", m, 4)
    if version < 2:
        raise ValueError(f"{path}: GGUF version {version} is not supported")
    n_tensors, n_kv = struct.unpack_from("<QQ", m, 8)
    pos = 24

    def read_value(t: int, p: int, keep: bool):
        if t in _SCALARS:
            fmt = _SCALARS[t]
            return (struct.unpack_from(fmt, m, p)[0] if keep else None), p + struct.calcsize(fmt)
        if t == _STRING:
            if not keep:
                (n,) = struct.unpack_from("<Q", m, p)
                return None, p + 8 + n
            return gguf_string(m, p)
        if t == _ARRAY:
            et, n = struct.unpack_from("<IQ", m, p)
            p += 12
            if et in _SCALARS:
                size = struct.calcsize(_SCALARS[et])
                vals = (list(struct.unpack_from("<" + _SCALARS[et][1] * n, m, p)) if keep else None)
                return vals, p + size * n
            out = [] if keep else None
            for _ in range(n):
                v, p = read_value(et, p, keep)
                if keep:
                    out.append(v)
            return out, p
        raise ValueError(f"{path}: unknown GGUF value type {t}")

    meta = {}
    for _ in range(n_kv):
        key, pos = gguf_string(m, pos)
        (t,) = struct.unpack_from("<I", m, pos)
        keep = key.startswith(prefix)
        val, pos = read_value(t, pos + 4, keep)
        if keep:
            meta[key] = val
    return meta, n_tensors, pos


def read_gguf_metadata(path: str | Path, prefix: str = "") -> dict:
    """The GGUF file's key/value metadata (keys starting with `prefix`); tensors are not read."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return parse_gguf_header(m, path, prefix)[0]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


# llama.cpp's whitespace set (Unicode White_Space), which differs from Python's str.isspace().
_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


@lru_cache(maxsize=None)
def _category_class(major: str) -> str:
    """A regex character class body with every code point whose Unicode category starts with
    `major` ("L": letters, "N": numbers), as ranges."""
    ranges = []
    start = prev = None
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp))[0] == major:
            if start is None:
                start = cp
            elif cp != prev + 1:
                ranges.append((start, prev))
                start = cp
            prev = cp
    if start is not None:
        ranges.append((start, prev))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                   for a, b in ranges)


@lru_cache(maxsize=None)
def _regexes() -> tuple[re.Pattern, re.Pattern]:
    letters, numbers = _category_class("L"), _category_class("N")
    digit = re.compile(f"[{numbers}]")
    # GPT-2's pattern; llama.cpp's implementation of `\s+(?!\S)` also takes a lone trailing run.
    gpt2 = re.compile(
        f"'s|'t|'re|'ve|'m|'ll|'d| ?[{letters}]+| ?[{numbers}]+| ?[^{_WS}{letters}{numbers}]+"
        f"|[{_WS}]+(?![^{_WS}])|[{_WS}]+")
    return digit, gpt2


class GgufTokenizer:
    """Byte-level BPE from a GGUF file (GPT-2 family). Encodes plain text; special tokens are not
    parsed (text such as "<|im_start|>" is tokenized as ordinary characters)."""

    def __init__(self, tokens: list[str], merges: list[str], pre: str, add_bos: bool, bos_id: int):
        self.tokens = tokens
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.ranks = {}
        for r, m in enumerate(merges):
            a, _, b = m.partition(" ")
            self.ranks[(a, b)] = r
        if pre in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"):
            self.split_digits = True
        elif pre in ("gpt2", "default", "gpt-2"):
            self.split_digits = False
        else:
            raise ValueError(f"pre-tokenizer '{pre}' is not supported")
        self.add_bos = add_bos
        self.bos_id = bos_id
        self._b2u = _bytes_to_unicode()
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> "GgufTokenizer":
        meta = read_gguf_metadata(path, prefix="tokenizer.ggml.")
        model = meta.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise ValueError(f"{path}: tokenizer model '{model}' is not byte-level BPE")
        return cls(meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.merges"],
                   meta.get("tokenizer.ggml.pre", "default"),
                   bool(meta.get("tokenizer.ggml.add_bos_token", False)),
                   int(meta.get("tokenizer.ggml.bos_token_id", 1)))

    def pre_tokenize(self, text: str) -> list[str]:
        digit, gpt2 = _regexes()
        pieces = []
        if self.split_digits:
            last = 0
            for m in digit.finditer(text):
                if m.start() > last:
                    pieces.append(text[last:m.start()])
                pieces.append(m.group())
                last = m.end()
            if last < len(text):
                pieces.append(text[last:])
        else:
            pieces = [text]
        words = []
        for p in pieces:
            words.extend(m.group() for m in gpt2.finditer(p))
        return words

    def bpe(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is not None:
            return ids
        syms = [self._b2u[b] for b in word.encode("utf-8", errors="surrogatepass")]
        ranks = self.ranks
        while len(syms) > 1:
            best, best_i = None, -1
            for i in range(len(syms) - 1):
                r = ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best):
                    best, best_i = r, i
            if best is None:
                break
            syms[best_i:best_i + 2] = [syms[best_i] + syms[best_i + 1]]
        ids = []
        for s in syms:
            i = self.vocab.get(s)
            if i is not None:
                ids.append(i)
            else:  # not reachable with a consistent vocabulary; llama.cpp falls back to bytes
                ids.extend(self.vocab[c] for c in s)
        if len(self._cache) < 500_000:
            self._cache[word] = ids
        return ids

    def encode(self, text: str, add_special: bool = False) -> list[int]:
        ids = [self.bos_id] if add_special and self.add_bos else []
        for w in self.pre_tokenize(text):
            ids.extend(self.bpe(w))
        return ids

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def decode(self, ids: list[int]) -> str:
        u2b = {u: b for b, u in self._b2u.items()}
        data = bytes(u2b[c] for i in ids for c in self.tokens[i] if c in u2b)
        return data.decode("utf-8", errors="replace")


@lru_cache(maxsize=4)
def load(path: str) -> GgufTokenizer:
    """A cached tokenizer for `path`."""
    return GgufTokenizer.from_file(path)
