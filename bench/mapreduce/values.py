#!/usr/bin/env python3
"""What copying under the grammar (MapReduceOptions::values) does to LLM×MapReduce retrieval.

Runs `loom mapreduce --task retrieval --evidence grounded` on --n short synthetic documents
(bench/mapreduce/synth.py: a few chunks each, so the needle's chunk is read as in a 128K document
but a run takes seconds) once per --values setting, and reports per setting the answers holding
the value (InfiniteBench's rule: the value as a whole word), the documents where some map note
held it, the grounded notes per document, and seconds; the ratio of each setting's accuracy to
the first setting's (the reference, measured in the same run). Writes
bench/results/mapreduce_values.json.

  .venv/bin/python bench/mapreduce/values.py --task number_string --length 2k --n 20
  .venv/bin/python bench/mapreduce/values.py --task kv_retrieval --length 4k --n 6
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from bench.mapreduce import cli, synth  # noqa: E402


def run_one(args, ex, values, doc):
    out = subprocess.run(cli.mapreduce_argv(args, doc, ex["input"], "retrieval", "--evidence",
                                            "grounded", "--values", values),
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="number_string", choices=synth.TASKS)
    ap.add_argument("--length", default="2k")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--values", nargs="+", default=["free", "sentence"],
                    help="settings to compare; the first is the reference")
    cli.add_loom_args(ap)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                  "mapreduce_values.json"))
    args = ap.parse_args()
    examples = synth.generate(args.task, args.length, args.n, seed=args.seed)
    rows = {v: [] for v in args.values}
    with tempfile.TemporaryDirectory() as tmp:
        for ex in examples:
            doc = os.path.join(tmp, "doc.txt")
            with open(doc, "w") as f:
                f.write(ex["context"])
            gold = ex["answer"][0]
            word = re.compile(r"(?<![\w-])" + re.escape(gold) + r"(?![\w-])")
            for values in args.values:
                t0 = time.time()
                r = run_one(args, ex, values, doc)
                row = {"id": ex["id"], "correct": bool(word.search(r["answer"])),
                       "map_found": any(word.search(c["extracted_information"] + " " + c["answer"])
                                        for c in r["chunks"]),
                       "grounded": sum(c["grounded"] for c in r["chunks"]),
                       "chunks": len(r["chunks"]), "seconds": time.time() - t0,
                       "answer": r["answer"]}
                rows[values].append(row)
                print(f"#{ex['id']} {values}: {'ok  ' if row['correct'] else 'MISS'} "
                      f"{gold} <- {r['answer'][:70]!r}", flush=True)
    summary = {}
    for values, rs in rows.items():
        summary[values] = {
            "accuracy": 100 * sum(r["correct"] for r in rs) / len(rs),
            "map_found": 100 * sum(r["map_found"] for r in rs) / len(rs),
            "grounded_per_doc": sum(r["grounded"] for r in rs) / len(rs),
            "seconds_per_doc": sum(r["seconds"] for r in rs) / len(rs)}
    ref = summary[args.values[0]]["accuracy"]
    for values, s in summary.items():
        ratio = f"{s['accuracy'] / ref:.2f}x" if ref else "n/a (reference 0%)"
        print(f"{args.task} {args.length} n={args.n} values={values}: answer {s['accuracy']:.0f}% "
              f"(vs {args.values[0]}: {ratio}), a map note held it {s['map_found']:.0f}%, "
              f"{s['grounded_per_doc']:.1f} grounded notes/doc, {s['seconds_per_doc']:.1f} s/doc")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"task": args.task, "length": args.length, "n": args.n, "seed": args.seed,
                   "context_window": args.context_window, "max_tokens": args.max_tokens,
                   "summary": summary, "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
