#!/usr/bin/env python3
"""The loom binary as a user runs it: `loom generate` and `loom chat` on the real model (with and
without DuoAttention's --duo-pattern), and clear errors (exit code 2 for bad flags, a message
naming the problem) for bad input.

  python3 tests/server/cli_test.py BUILD/server/loom
"""
import os
import re
import subprocess
import sys
import tempfile
import unittest

LOOM = None
MODEL = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
DUO_PATTERN = "config/duo_attention/SmolLM2-135M-Instruct.Q4_1.json"


def run(*args, stdin=None, timeout=120):
    return subprocess.run([LOOM, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


@unittest.skipUnless(os.path.exists(MODEL), f"{MODEL} is missing: run tools/fetch_model.sh")
class GenerateTest(unittest.TestCase):
    def test_greedy_plain_prompt(self):
        r = run("generate", "--prompt", "The capital of France is", "--max-tokens", "8")
        self.assertEqual(r.returncode, 0, r.stderr)
        # llama.cpp's greedy continuation starts " Paris." (tests/data/reference_llamacpp.json).
        self.assertTrue(r.stdout.startswith(" Paris."), r.stdout)
        self.assertRegex(r.stderr, r"prefill: 5 tokens, [\d.]+ tok/s \| decode: 8 tokens")

    def test_chat_prompt_uses_the_template(self):
        r = run("generate", "--chat", "--prompt", "Name a primary colour.", "--system",
                "You are a terse assistant. Answer in one word.", "--max-tokens", "16")
        self.assertEqual(r.returncode, 0, r.stderr)
        # Same prompt as the chat_system reference case: 31 tokens after the ChatML template.
        self.assertIn("prefill: 31 tokens", r.stderr)
        self.assertTrue(r.stdout.startswith("The primary colour is red."), r.stdout)
        self.assertIn("finish: stop", r.stderr)  # ends on <|im_end|>

    def test_seed_makes_sampling_repeatable(self):
        args = ["generate", "--prompt", "Once upon a time", "--max-tokens", "24", "--temperature",
                "1.0", "--ignore-eos"]
        a = run(*args, "--seed", "7")
        b = run(*args, "--seed", "7")
        c = run(*args, "--seed", "8")
        self.assertEqual(a.returncode, 0, a.stderr)
        self.assertEqual(a.stdout, b.stdout)
        self.assertNotEqual(a.stdout, c.stdout)

    def test_stop_string_cuts_the_text(self):
        r = run("generate", "--prompt", "The capital of France is", "--max-tokens", "16",
                "--stop", ".")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "Paris")
        self.assertIn("finish: stop", r.stderr)

    def test_chat_keeps_the_conversation(self):
        r = run("chat", "--max-tokens", "24", stdin="My name is Ada.\nWhat is my name?\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        prompts = [int(n) for n in re.findall(r"prefill: (\d+) tokens", r.stderr)]
        decoded = [int(n) for n in re.findall(r"decode: (\d+) tokens", r.stderr)]
        self.assertEqual(len(prompts), 2, r.stderr)
        # The second turn's prompt holds the first question and answer, then the new question.
        self.assertGreater(prompts[1], prompts[0] + decoded[0])
        self.assertEqual(len(r.stdout.strip().splitlines()), 2, r.stdout)  # one line per answer

    def test_prompt_longer_than_context_is_an_error(self):
        r = run("generate", "--prompt", "word " * 300, "--ctx", "128")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("exceeds the context of 128 tokens", r.stderr)


@unittest.skipUnless(os.path.exists(MODEL), f"{MODEL} is missing: run tools/fetch_model.sh")
class DuoAttentionTest(unittest.TestCase):
    """--duo-pattern / --duo-sparsity as `loom serve` takes them (server/duo_options.h)."""
    GREEDY = ["generate", "--prompt", "The capital of France is", "--max-tokens", "24",
              "--ignore-eos"]

    def test_sparsity_zero_gives_the_plain_greedy_text(self):
        plain = run(*self.GREEDY)
        duo = run(*self.GREEDY, "--duo-pattern", DUO_PATTERN, "--duo-sparsity", "0")
        self.assertEqual(plain.returncode, 0, plain.stderr)
        self.assertEqual(duo.returncode, 0, duo.stderr)
        self.assertIn("sparsity 0.00: 0 of 90 KV heads streaming", duo.stderr)
        self.assertEqual(duo.stdout, plain.stdout)

    def test_streaming_heads(self):
        duo = run(*self.GREEDY, "--duo-pattern", DUO_PATTERN, "--duo-sparsity", "0.5")
        self.assertEqual(duo.returncode, 0, duo.stderr)
        self.assertIn("45 of 90 KV heads streaming (sink 64, recent 256)", duo.stderr)
        self.assertIn("paged KV 11520 bytes/token (full 23040)", duo.stderr)
        # Within sink + recent every head sees every position; the text may still drift from
        # plain attention's in the last bits (streaming heads use their own attention call).
        self.assertTrue(duo.stdout.startswith(" Paris."), duo.stdout)

    def test_chat_turns(self):
        stdin = "My name is Ada.\nWhat is my name?\n"
        plain = run("chat", "--max-tokens", "24", stdin=stdin)
        same = run("chat", "--max-tokens", "24", "--duo-pattern", DUO_PATTERN, "--duo-sparsity",
                   "0", stdin=stdin)
        self.assertEqual(same.returncode, 0, same.stderr)
        self.assertEqual(same.stdout, plain.stdout)
        # Streaming heads: a turn resumes from the cache only where the ring still holds it.
        duo = run("chat", "--max-tokens", "24", "--duo-pattern", DUO_PATTERN, stdin=stdin)
        self.assertEqual(duo.returncode, 0, duo.stderr)
        self.assertEqual(len(re.findall(r"prefill: (\d+) tokens", duo.stderr)), 2, duo.stderr)
        self.assertEqual(len(duo.stdout.strip().splitlines()), 2, duo.stdout)

    def test_bad_pattern_path_and_sparsity_are_clear_errors(self):
        r = run("generate", "--prompt", "x", "--duo-pattern", "/nonexistent/duo.json")
        self.assertNotEqual(r.returncode, 0)
        self.assertGreater(r.returncode, 0)  # an error exit, not a signal
        self.assertIn("cannot read /nonexistent/duo.json", r.stderr)
        self.assertEqual(r.stdout, "")
        r = run("generate", "--prompt", "x", "--duo-pattern", DUO_PATTERN, "--duo-sparsity",
                "1.5")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--duo-sparsity must be in [0, 1]", r.stderr)
        r = run("generate", "--prompt", "x", "--duo-sparsity", "half")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--duo-sparsity: 'half' is not a valid number", r.stderr)


class BadInputTest(unittest.TestCase):
    def test_unknown_command_and_flag(self):
        r = run("frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'frobnicate'", r.stderr)
        r = run("generate", "--prompt", "x", "--bogus", "1")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown flag --bogus", r.stderr)

    def test_out_of_range_sampling_values(self):
        r = run("generate", "--prompt", "x", "--temperature", "5")
        self.assertEqual(r.returncode, 2)
        self.assertIn("temperature", r.stderr)
        r = run("generate", "--prompt", "x", "--max-tokens", "ten")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--max-tokens: 'ten' is not a valid number", r.stderr)

    def test_missing_and_corrupt_model_files(self):
        r = run("generate", "--prompt", "x", "--model", "/nonexistent/model.gguf")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("/nonexistent/model.gguf", r.stderr)
        with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
            f.write(b"GGUF\x03\x00\x00\x00" + b"\x01" * 20)
            f.flush()
            r = run("generate", "--prompt", "x", "--model", f.name)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("GGUF", r.stderr)
            self.assertNotIn("Segmentation", r.stderr)
            self.assertGreater(r.returncode, 0)  # an error exit, not a signal

    @unittest.skipUnless(os.path.exists(MODEL), f"{MODEL} is missing")
    def test_truncated_real_model(self):
        with open(MODEL, "rb") as src, tempfile.NamedTemporaryFile(suffix=".gguf") as f:
            f.write(src.read(5_000_000))
            f.flush()
            r = run("generate", "--prompt", "x", "--model", f.name)
            self.assertGreater(r.returncode, 0)
            self.assertRegex(r.stderr, r"(?i)truncat|past the end|exceeds")


if __name__ == "__main__":
    LOOM = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
