#!/usr/bin/env python3
"""LLM×MapReduce benchmark: accuracy of Loom×MapReduce against the same model reading the document
truncated to its context window, on InfiniteBench-style synthetic tasks (bench/mapreduce/synth.py:
passkey, number_string, kv_retrieval) at several lengths, scored with the InfiniteBench scorer
(bench/mapreduce/infinitebench.py, the LLM×MapReduce repository's rules).

Starts the real `loom serve` on a free port (or measures --url) and, per task and length, for each
of --n examples:
  * mapreduce: POST /v1/pipelines/mapreduce {document, question, task: retrieval};
  * truncation: the task's InfiniteBench prompt with the context cut in the middle (first and last
    halves kept, as InfiniteBench truncates) to fit the model's context, via /v1/chat/completions.
Reports accuracy, wall time and tokens processed per method, task and length; writes
bench/results/mapreduce.json and bench/results/mapreduce.png. Truncation can score at most about
window/length (the needle survives only when it sits in the kept part); each truncated row records
whether it did (`in_window`), so a miss can be put on the truncation or on the model.

Time: MapReduce reads every token of every document; on two CPU cores SmolLM2-135M prefills
roughly 400-600 tokens/s, so one 128K example takes minutes. The full grid (3 tasks x 4 lengths x
20 examples) takes many hours; choose --tasks/--lengths/--n to fit. Results accumulate: every
finished example is written to --out at once, and a later run with the same settings (model,
L, max_tokens, evidence, seed) reuses the examples already there and keeps the other cells, so the
grid can be filled over several runs (--redo runs MapReduce on the selected cells again, as after
a change to the pipeline; --fresh starts a new file).

  .venv/bin/python bench/mapreduce/run.py --tasks passkey --lengths 16k --n 20
  .venv/bin/python bench/mapreduce/run.py --tasks passkey number_string --lengths 16k 128k --n 20
"""
import argparse
import concurrent.futures
import json
import os
import sys
import time

import subprocess

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))
from bench.mapreduce import infinitebench, synth  # noqa: E402
from server_process import LOOM_LISTENING, ServerProcess  # noqa: E402

MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
LOOM_BIN = os.environ.get("LOOM_BIN", os.path.join(ROOT, "build", "server", "loom"))


def start_loom(args):
    argv = [args.loom_bin, "serve", "--model", args.model, "--port", "0", "--grpc-port", "-1",
            "--threads", str(args.threads), "--max-num-seqs", "16", "--max-batched-tokens", "512",
            "--request-timeout-s", "0", "--mapreduce-max-parallel", "16"]
    return ServerProcess(argv, "loom", port_re=LOOM_LISTENING, cwd=ROOT, start_new_session=True)


def truncate_middle(client, url, text, keep):
    """`text` cut to `keep` tokens: the first and the last halves (InfiniteBench's truncation)."""
    toks = client.post(url + "/tokenize", json={"prompt": text, "add_special_tokens": False}).json()
    ids = toks["tokens"]
    if len(ids) <= keep:
        return text
    half = keep // 2
    kept = ids[:half] + ids[len(ids) - (keep - half):]
    return client.post(url + "/detokenize", json={"tokens": kept}).json()["prompt"]


# What must match for a stored example to be reused.
SETTINGS = ("model", "context_window", "max_tokens", "evidence", "values", "seed", "rules")


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_previous(path, result):
    """The earlier run's cells at `path` when its settings match `result`'s, else {} (or exit)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        old = json.load(f)
    key = lambda r, k: os.path.basename(str(r.get(k))) if k == "model" else r.get(k)  # noqa: E731
    differ = [k for k in SETTINGS if key(old, k) != key(result, k)]
    if differ:
        sys.exit(f"{path} was measured with other settings ({', '.join(differ)}): pass --fresh "
                 f"to replace it, or --out for a new file")
    return {(c["task"], c["length"]): c for c in old.get("cells", [])}


def reuse(cell, method, examples):
    """Stored rows of `method` in `cell` for `examples`, by example id. Rows with an error are
    run again, and so are rows of an example the generator now makes differently (another
    answer or depth)."""
    if not cell:
        return {}
    made = {ex["id"]: (ex["answer"], ex.get("depth")) for ex in examples}
    return {r["id"]: r for r in cell["examples"][method]
            if not r.get("error") and made.get(r["id"]) == (r["answer"], r.get("depth"))}


def run_mapreduce(client, url, ex, args):
    t0 = time.time()
    r = client.post(url + "/v1/pipelines/mapreduce", timeout=None, json={
        "document": ex["context"], "question": ex["input"], "task": "retrieval",
        "context_window": args.context_window, "max_tokens": args.max_tokens,
        "evidence": args.evidence, "values": args.values})
    wall = time.time() - t0
    if r.status_code != 200:
        return {"pred": "", "error": f"HTTP {r.status_code}: {r.text[:200]}", "seconds": wall,
                "tokens": 0}
    body = r.json()
    gold = [str(a) for a in ex["answer"]]
    # Per-chunk notes, to tell a map that missed the value from a reduce that dropped it.
    notes = [{"index": c["index"], "confidence": c["confidence"], "grounded": c.get("grounded"),
              "no_information": c["no_information"],
              "value_in_extracted": any(g in c["extracted_information"] for g in gold),
              "value_in_answer": any(g in c["answer"] for g in gold)}
             for c in body.get("chunks", [])]
    # The text of the notes the reduce can have read (grounded ones) and of those holding the
    # value, to see why a found value was lost.
    for n, c in zip(notes, body.get("chunks", [])):
        if n["grounded"] or n["value_in_extracted"] or n["value_in_answer"]:
            n.update(extracted=c["extracted_information"][:300], answer_text=c["answer"][:200],
                     rationale=c["rationale"][:200])
    return {"pred": body["answer"], "seconds": wall, "tokens": body["usage"]["total_tokens"],
            "cached_tokens": body["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0),
            "num_chunks": body["num_chunks"], "collapse_rounds": body["collapse_rounds"],
            "confidence": body["confidence"], "rationale": body.get("rationale", ""),
            "map_found": any(n["value_in_extracted"] or n["value_in_answer"] for n in notes),
            "map_found_answer": any(n["value_in_answer"] for n in notes), "notes": notes}


def truncated_context(client, url, ex, window):
    """The example's document cut to what the truncated prompt has room for."""
    overhead = 160 + 32  # template, question and chat markup, and the answer
    return truncate_middle(client, url, ex["context"], window - overhead)


def run_truncated(client, url, ex, task, window, args):
    t0 = time.time()
    context = truncated_context(client, url, ex, window)
    prompt = synth.PROMPT_TEMPLATES[task].format(context=context, input=ex["input"])
    r = client.post(url + "/v1/chat/completions", timeout=None, json={
        "messages": [{"role": "user", "content": prompt}], "max_tokens": 32, "temperature": 0})
    wall = time.time() - t0
    if r.status_code != 200:
        return {"pred": "", "error": f"HTTP {r.status_code}: {r.text[:200]}", "seconds": wall,
                "tokens": 0}
    body = r.json()
    return {"pred": body["choices"][0]["message"]["content"], "seconds": wall,
            "tokens": body["usage"]["total_tokens"], "in_window": in_window(ex, context)}


def in_window(ex, context):
    """Whether the value survived truncation: the model could have read it."""
    return any(str(a) in context for a in ex["answer"])


def summarize(rows, task):
    scores = [infinitebench.score_one(task, r["pred"], r["answer"]) for r in rows]
    for r, s in zip(rows, scores):
        r["score"] = s
    out = {"accuracy": 100.0 * sum(scores) / max(1, len(scores)), "n": len(rows),
            "errors": sum(1 for r in rows if r.get("error")),
            "seconds_total": sum(r["seconds"] for r in rows),
            "tokens_total": sum(r["tokens"] for r in rows),
            "cached_tokens_total": sum(r.get("cached_tokens", 0) for r in rows)}
    if rows and "in_window" in rows[0]:
        # Share of examples whose value was in the part the truncated prompt kept.
        out["in_window"] = 100.0 * sum(r.get("in_window", False) for r in rows) / len(rows)
    if rows and "map_found" in rows[0]:
        # Share of examples where some map note held the value (in Extracted Information or
        # Answer), and where some note's Answer did: the reduce can only pick what the map found.
        out["map_found"] = 100.0 * sum(r.get("map_found", False) for r in rows) / len(rows)
        out["map_found_answer"] = 100.0 * sum(r.get("map_found_answer", False)
                                              for r in rows) / len(rows)
    return out


def plot(result, path):
    """Accuracy against length per task, MapReduce and truncation, to `path`; the figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = sorted({c["task"] for c in result["cells"]})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        cells = sorted((c for c in result["cells"] if c["task"] == task), key=lambda c: c["length"])
        xs = [c["length"] // 1024 for c in cells]
        ax.plot(xs, [c["mapreduce"]["accuracy"] for c in cells], "o-", label="Loom×MapReduce")
        for x, c in zip(xs, cells):
            ax.annotate(f"n={c['mapreduce']['n']}", (x, c["mapreduce"]["accuracy"]),
                        textcoords="offset points", xytext=(0, -14), ha="center", fontsize=8)
        tr = [(x, c["truncation"]["accuracy"]) for x, c in zip(xs, cells) if c["truncation"]["n"]]
        if tr:
            ax.plot(*zip(*tr), "s--", label="truncated")
        kept = [(x, c["truncation"]["in_window"]) for x, c in zip(xs, cells)
                if "in_window" in c["truncation"]]
        if kept:
            ax.plot(*zip(*kept), "x:", color="gray", label="value kept by truncation")
        # The share of the document the cut keeps: about how often it keeps a needle placed
        # at a uniform depth, so what truncation could reach ("value kept" is the measured share).
        ax.plot(xs, [min(100.0, 100.0 * result["window"] / c["length"]) for c in cells], "-",
                color="gray", alpha=0.4, linewidth=1, label="window / length")
        ax.set_title(task)
        ax.set_xlabel("document length (K tokens)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-5, 105)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.grid(True, alpha=0.3)
    # One legend under the panels: inside a panel it covered the MapReduce line.
    handles = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    # Four labels in one row are wider than one panel: a single task's figure takes two rows.
    ncol = len(handles) if len(tasks) > 1 else 2
    rows = -(-len(handles) // ncol)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=ncol,
               fontsize=9, frameon=False)
    fig.suptitle(f"{os.path.basename(result['model'])}\nMapReduce (L={result['context_window']}) "
                 f"vs truncation to {result['window']} tokens", fontsize=10)
    fig.tight_layout(rect=(0, 0.02 + 0.05 * rows, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="measure this server instead of starting loom serve")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--loom-bin", default=LOOM_BIN)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("LOOM_BENCH_THREADS", "2")))
    ap.add_argument("--tasks", nargs="+", default=["passkey", "number_string", "kv_retrieval"])
    ap.add_argument("--lengths", nargs="+", default=["16k", "32k", "64k", "128k"])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    # The pipeline's defaults are the paper's L = 4096 and 300 tokens; SmolLM2-135M finds needles
    # far better in 1K-token calls (docs/mapreduce.md), so the benchmark defaults to those.
    ap.add_argument("--context-window", type=int, default=1024, help="MapReduce's L")
    ap.add_argument("--max-tokens", type=int, default=150, help="per MapReduce call")
    ap.add_argument("--evidence", choices=["answered", "grounded"], default="grounded",
                    help="which map results the reduce reads (MapReduceOptions::evidence)")
    ap.add_argument("--values", choices=["auto", "free", "digits", "sentence"], default="auto",
                    help="what the model may write (MapReduceOptions::values; auto: sentence "
                         "for retrieval)")
    ap.add_argument("--no-truncation", action="store_true",
                    help="skip the truncation baseline (it costs as much as MapReduce at 16K)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "mapreduce.json"))
    ap.add_argument("--fresh", action="store_true",
                    help="replace --out: keep none of its cells")
    ap.add_argument("--redo", action="store_true",
                    help="run MapReduce on the selected cells again (the truncated baseline and "
                         "other cells are kept)")
    args = ap.parse_args()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)

    result = {"model": args.model, "threads": args.threads, "context_window": args.context_window,
              "max_tokens": args.max_tokens, "evidence": args.evidence, "values": args.values,
              "seed": args.seed, "rules": infinitebench.DEFAULT_RULES, "cells": []}
    previous = {} if args.fresh else load_previous(args.out, result)
    # Cells of earlier runs that this one does not measure are kept as they are.
    measured = {(t, synth.parse_length(n)) for t in args.tasks for n in args.lengths}
    kept = [c for k, c in previous.items() if k not in measured]
    commit = git_commit()

    def save():
        result["cells"] = sorted(kept + cells, key=lambda c: (c["task"], c["length"]))
        # Partial results survive a stopped run; the rename keeps a run stopped mid-write from
        # leaving a cut-off file.
        tmp = os.path.splitext(args.out)[0] + ".partial.json"  # git-ignored like the result
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, args.out)

    srv = None if args.url else start_loom(args)
    url = args.url.rstrip("/") if args.url else srv.url
    cells = []
    t_start = time.time()
    try:
        with httpx.Client(timeout=None) as client:
            window = client.get(url + "/v1/models").json()["data"][0]["max_model_len"]
            result["window"] = window
            for task in args.tasks:
                for length in args.lengths:
                    examples = synth.generate(task, length, args.n, seed=args.seed)
                    old = previous.get((task, synth.parse_length(length)))
                    # --redo re-runs MapReduce; the truncated baseline does not depend on it.
                    old_mr = {} if args.redo else reuse(old, "mapreduce", examples)
                    old_tr = reuse(old, "truncation", examples)
                    cell = {"task": task, "length": synth.parse_length(length),
                            "examples": {"mapreduce": [], "truncation": []}}
                    cells.append(cell)
                    mr_rows, tr_rows = cell["examples"]["mapreduce"], cell["examples"]["truncation"]

                    def finish():
                        cell["mapreduce"] = summarize(mr_rows, task)
                        cell["truncation"] = summarize(tr_rows, task)
                        save()

                    reused = sum(ex["id"] in old_mr for ex in examples)
                    if reused:
                        print(f"  {task} {length}: reusing {reused} MapReduce examples from "
                              f"{args.out}", flush=True)
                    for i, ex in enumerate(examples):
                        row = old_mr.get(ex["id"])
                        if row is None:
                            row = run_mapreduce(client, url, ex, args)
                            row.update(id=ex["id"], answer=ex["answer"], depth=ex.get("depth"),
                                       commit=commit)
                            print(f"  {task} {length} #{i}: mapreduce {row['pred'][:60]!r} "
                                  f"(answer {ex['answer'][0]}; map found it: "
                                  f"{row.get('map_found')}) {row['seconds']:.0f} s", flush=True)
                        mr_rows.append(row)
                        finish()
                    todo = [] if args.no_truncation else [
                        ex for ex in examples if ex["id"] not in old_tr]
                    with concurrent.futures.ThreadPoolExecutor(4) as pool:
                        futs = {ex["id"]: pool.submit(run_truncated, client, url, ex, task,
                                                      window, args) for ex in todo}
                        for ex in examples:
                            if ex["id"] in old_tr:
                                row = old_tr[ex["id"]]
                                if "in_window" not in row:  # rows from before it was recorded
                                    row["in_window"] = in_window(
                                        ex, truncated_context(client, url, ex, window))
                                tr_rows.append(row)
                            elif ex["id"] in futs:
                                row = futs[ex["id"]].result()
                                row.update(id=ex["id"], answer=ex["answer"],
                                           depth=ex.get("depth"), commit=commit)
                                tr_rows.append(row)
                    finish()
                    print(f"{task:14s} {length:>5s}: MapReduce {cell['mapreduce']['accuracy']:5.1f}% "
                          f"(map found the value in {cell['mapreduce'].get('map_found', 0):.0f}%) "
                          f"({cell['mapreduce']['seconds_total']:.0f} s, "
                          f"{cell['mapreduce']['tokens_total']} tokens) | truncated "
                          f"{cell['truncation']['accuracy']:5.1f}% "
                          f"(value in the kept part: {cell['truncation'].get('in_window', 0):.0f}%) "
                          f"({cell['truncation']['seconds_total']:.0f} s)", flush=True)
    finally:
        if srv:
            srv.stop()
    result["wall_s"] = time.time() - t_start
    save()
    png = os.path.splitext(args.out)[0] + ".png"
    plot(result, png)
    print(f"\n{'task':14s} {'length':>7s} {'MapReduce':>16s} {'truncated':>10s} {'kept':>6s} "
          f"{'window/len':>10s}")
    for c in result["cells"]:
        tr = c["truncation"]
        trunc = (f"{tr['accuracy']:>9.1f}% {tr.get('in_window', 0):>5.0f}%" if tr["n"]
                 else f"{'not run':>10s} {'':>6s}")
        print(f"{c['task']:14s} {c['length']:>7d} {c['mapreduce']['accuracy']:>9.1f}% "
              f"(n={c['mapreduce']['n']:<2d}) {trunc} {100.0 * window / c['length']:>9.1f}%")
    print(f"wrote {args.out} and {png} ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
