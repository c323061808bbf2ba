#!/usr/bin/env python3
"""How often LLM×MapReduce map notes echo the prompt templates instead of the document.

A small model (SmolLM2-135M) tends to write into a field the description the prompt gave for it,
or the calibration example. This runs `loom mapreduce` on --n synthetic pass-key documents
(bench/mapreduce/synth.py) as --task, with the templates under --root/config/mapreduce, and counts
the map notes that share a run of 5 words with any template of that task or calibration.txt, and
the runs whose answer holds the key. Compare two template sets by pointing --root at a copy:

  .venv/bin/python bench/mapreduce/template_echo.py --task qa
  .venv/bin/python bench/mapreduce/template_echo.py --task qa --root /tmp/old   # old templates
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from bench.mapreduce import cli, synth  # noqa: E402


def grams(text, n=5):
    words = re.findall(r"[a-z0-9.]+", text.lower())
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=ROOT, help="directory holding config/mapreduce")
    ap.add_argument("--task", default="qa", help="template set (qa, retrieval, math, ...)")
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--length", default="3072")
    ap.add_argument("--seed", type=int, default=3)
    cli.add_loom_args(ap)
    args = ap.parse_args()
    conf = os.path.join(args.root, "config", "mapreduce")
    texts = [open(f).read() for f in glob.glob(os.path.join(conf, args.task, "*.txt"))]
    texts.append(open(os.path.join(conf, "calibration.txt")).read())
    template_grams = set().union(*(grams(t) for t in texts))
    found = echoing = notes = 0
    examples = synth.generate("passkey", args.length, args.n, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for i, ex in enumerate(examples):
            doc = os.path.join(tmp, "doc.txt")
            with open(doc, "w") as f:
                f.write(ex["context"])
            out = subprocess.run(cli.mapreduce_argv(args, doc, ex["input"], args.task),
                                 cwd=args.root, capture_output=True, text=True, check=True)
            result = json.loads(out.stdout)
            hit = ex["answer"][0] in result["answer"]
            found += hit
            for c in result["chunks"]:
                notes += 1
                echoing += bool(grams(" ".join([c["extracted_information"], c["rationale"],
                                                c["answer"]])) & template_grams)
            print(f"#{i}: key {ex['answer'][0]} {'found' if hit else 'missed'}: "
                  f"{result['answer'][:70]!r}", flush=True)
    print(f"{args.task} templates under {conf}: the answer held the key {found}/{len(examples)}; "
          f"map notes echoing template text (a shared 5-word run): {echoing}/{notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
