"""The synthetic long-context task generator (bench/mapreduce/synth.py)."""
import json
import re

import pytest

from bench.mapreduce import gguf_tokenizer, synth
from bench.mapreduce.infinitebench import score_one

LENGTHS = ["16k", "32k", "64k", "128k"]


@pytest.fixture(scope="module")
def gen(model_path, haystack_dir):
    cache = {}

    def make(task, length, n=1, seed=0):
        key = (task, length, n, seed)
        if key not in cache:
            cache[key] = synth.generate(task, length, n, seed, model_path, haystack_dir)
        return cache[key]
    return make


@pytest.fixture(scope="module")
def tok(model_path):
    return gguf_tokenizer.load(str(model_path))


def test_parse_length():
    assert synth.parse_length("16k") == 16384
    assert synth.parse_length("128K") == 131072
    assert synth.parse_length("100k") == 102400
    assert synth.parse_length(5000) == 5000
    with pytest.raises(ValueError):
        synth.parse_length("lots")


def test_sentence_boundary():
    text = "One line\nwrapped. Two.  Three?\nFour"
    assert synth._sentence_boundary(text, 0) == 0
    assert text[synth._sentence_boundary(text, 3):].startswith("Two.")
    assert text[synth._sentence_boundary(text, 19):].startswith(" Three?")
    assert text[synth._sentence_boundary(text, 24):].startswith("Four")
    assert synth._sentence_boundary(text, len(text) - 2) == len(text)
    assert text[synth._sentence_start_before(text, len(text) - 2):] == "Four"
    assert text[synth._sentence_start_before(text, 20):].startswith("Two.")
    assert synth._sentence_start_before(text, 12) == 0
    assert synth._sentence_start_before("no sentence end", 10) == 0


def test_needle_at_the_end_starts_a_sentence(gen):
    # Example 17 draws a depth after the body's last sentence start (the body is cut at a token
    # count, mid-sentence). Its needle once followed "Back in the 90s" with no sentence end, and
    # the MapReduce map could not copy it as a sentence of its own.
    ex = gen("number_string", "16k", n=20)[17]
    needle = synth.NEEDLES["number_string"].format(key=ex["answer"][0])
    i = ex["context"].index(needle)
    assert ex["depth"] > 0.9
    assert i == 0 or ex["context"][i - 2] in ".?!\n"
    assert ex["context"][i + len(needle):].strip()  # some of the body follows it


@pytest.mark.parametrize("task", synth.TASKS)
def test_deterministic_for_a_seed(gen, model_path, haystack_dir, task):
    a = gen(task, "16k", n=2, seed=0)
    b = synth.generate(task, "16k", 2, 0, model_path, haystack_dir)
    assert a == b
    # Example i does not depend on --n, and another seed gives other examples.
    assert synth.generate(task, "16k", 1, 0, model_path, haystack_dir) == a[:1]
    c = gen(task, "16k", n=2, seed=1)
    assert c[0]["answer"] != a[0]["answer"] and c[0]["context"] != a[0]["context"]
    assert a[0]["answer"] != a[1]["answer"]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("task", synth.TASKS)
def test_length_within_five_percent(gen, tok, task, length):
    target = synth.parse_length(length)
    for ex in gen(task, length):
        n = tok.count(synth.render_prompt(ex, task))
        assert n == ex["length"]
        assert ex["target_length"] == target
        assert abs(n - target) <= 0.05 * target, (task, length, n)
        assert n <= target


@pytest.mark.parametrize("task", ["passkey", "number_string"])
def test_needle_once_and_answer_matches(gen, task):
    for length in ("16k", "128k"):
        for ex in gen(task, length) + (gen(task, "16k", n=2) if length == "16k" else []):
            assert sorted(ex) == sorted(["id", "context", "input", "answer", "options", "length",
                                         "target_length", "depth"])
            assert ex["options"] == [] and isinstance(ex["answer"], list) and len(ex["answer"]) == 1
            key = ex["answer"][0]
            needle = synth.NEEDLES[task].format(key=key)
            ctx = ex["context"]
            assert ctx.count(needle) == 1
            # The key occurs only inside the needle (twice, as InfiniteBench writes it).
            assert key not in ctx.replace(needle, "")
            assert ctx.count(key) == 2
            assert ex["input"] == synth.QUESTIONS[task]
            assert 0.0 <= ex["depth"] <= 1.0
            i = ctx.index(needle)
            assert abs(i / len(ctx) - ex["depth"]) < 0.02
            # The needle starts a sentence.
            assert i == 0 or ctx[i - 2] in ".?!\n"
            if task == "passkey":
                assert re.fullmatch(r"[0-9]{5}", key)
            else:
                assert re.fullmatch(r"[0-9]{10}", key)
                # InfiniteBench's construction repeats digits: at most 5 runs of equal digits.
                assert len(re.findall(r"(\d)\1*", key)) <= 5
            # A right answer scores 1 under both rule sets, a wrong one 0.
            for rules in ("mapreduce", "infinitebench"):
                assert score_one(task, f"{key}", ex["answer"], rules) == 1
                assert score_one(task, "The answer is 1.", ex["answer"], rules) == 0


def test_depths_spread(gen):
    depths = [ex["depth"] for ex in gen("passkey", "16k", n=2) + gen("passkey", "16k", n=2, seed=1)]
    assert len(set(depths)) == 4


def test_kv_retrieval_structure(gen):
    for length in ("16k", "128k"):
        for ex in gen("kv_retrieval", length):
            ctx = ex["context"]
            assert ctx.startswith("JSON data:\n{")
            obj = json.loads(ctx[len("JSON data:\n"):])
            m = re.fullmatch(r'Key: "([0-9a-f-]{36})"\nThe value associated with the specified key is: ',
                             ex["input"])
            assert m, ex["input"]
            key = m.group(1)
            value = ex["answer"][0]
            assert obj[key] == value
            # Every key and value is a distinct UUID4; the asked key and its value occur once.
            strings = list(obj) + list(obj.values())
            assert len(set(strings)) == len(strings)
            assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", s)
                       for s in strings[:50])
            assert ctx.count(key) == 1 and ctx.count(value) == 1
            assert ex["options"] == []
            assert score_one("kv_retrieval", f'The value is "{value}".', ex["answer"]) == 1
            assert score_one("kv_retrieval", f'The value is "{key}".', ex["answer"]) == 0


def test_cli(model_path, haystack_dir, tmp_path, capsys):
    out = tmp_path / "passkey.jsonl"
    assert synth.main(["--task", "number_string", "--length", "16k", "--n", "2", "--seed", "3",
                       "--out", str(out), "--model", str(model_path),
                       "--haystack", str(haystack_dir)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [0, 1]
    assert rows == synth.generate("number_string", "16k", 2, 3, model_path, haystack_dir)
    assert "wrote 2 number_string examples" in capsys.readouterr().out
