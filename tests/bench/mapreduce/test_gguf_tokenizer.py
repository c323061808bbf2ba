"""The pure-Python GGUF tokenizer (bench/mapreduce/gguf_tokenizer.py) against llama.cpp's ids."""
import json
from pathlib import Path

import pytest

from bench.mapreduce import gguf_tokenizer

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tok(model_path):
    return gguf_tokenizer.load(str(model_path))


def test_metadata(model_path):
    meta = gguf_tokenizer.read_gguf_metadata(model_path, prefix="tokenizer.ggml.")
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "smollm"
    assert len(meta["tokenizer.ggml.tokens"]) == 49152
    assert "general.architecture" not in meta


def test_llama_cpp_reference_cases(tok):
    # tests/data/tokenizer_cases.json: llama.cpp's ids (tools/tokenizer_cases.py). Special-token
    # parsing and invalid UTF-8 are out of scope here.
    data = json.loads((ROOT / "tests" / "data" / "tokenizer_cases.json").read_text())
    checked = 0
    for case in data["cases"]:
        if case["parse_special"] or "text" not in case:
            continue
        assert tok.encode(case["text"]) == case["ids"], case["name"]
        checked += 1
    assert checked >= 30


def test_digits_split_and_round_trip(tok):
    ids = tok.encode("The pass key is 71432.")
    assert tok.decode(ids) == "The pass key is 71432."
    assert [tok.decode([i]) for i in tok.encode("71432")] == list("71432")
    assert tok.count("") == 0


def test_matches_llama_cpp_on_haystack(tok, model_path, haystack_dir):
    llama_cpp = pytest.importorskip("llama_cpp")  # requirements-tools.txt
    llm = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    from bench.mapreduce.synth import load_essays
    for text in load_essays(str(haystack_dir))[:12]:
        assert tok.encode(text) == llm.tokenize(text.encode(), add_bos=False, special=False)
