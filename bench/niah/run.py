#!/usr/bin/env python3
"""Needle in a Haystack: full attention vs DuoAttention at several fractions of streaming heads on
the served model, as in the DuoAttention paper's figures (arXiv 2410.10819, Fig. 1 and 6).

For each configuration the script starts the real `loom serve` (full attention: no pattern;
DuoAttention: `--duo-pattern PATTERN --duo-sparsity S`) on a free port with --threads threads,
sends every (context length, depth) item once through /v1/chat/completions, one at a time, and
scores it. Writes bench/results/niah.json and bench/results/niah.png (one heat map per
configuration, context length across, depth down, green = found, red = missed) and prints each
configuration's mean accuracy and DuoAttention-50% minus full attention in points.

The items (identical for every configuration; everything is seeded):
  * haystack: the Paul Graham essays (../shared/data/haystack/paul_graham_essays, or
    LOOM_HAYSTACK_DIR / --haystack) in an order shuffled per item, joined by blank lines. Each item
    gets its own order, so prompts share no prefix beyond the instruction (the full-attention
    server's prefix cache gains nothing DuoAttention, which turns it off, does not);
  * needle: NEEDLE = "The special magic number is {key}." with a random 5-digit key per item
    (one that does not occur in that item's haystack), inserted at the sentence start nearest to
    the depth's position (depth = the fraction of the haystack's tokens before the needle; 0% =
    before the first sentence, 100% = after the last whole sentence; the JSON's prompts list the
    depth each needle got, needle_token_depth);
  * prompt: the single user message PROMPT (instruction, haystack with the needle, QUESTION),
    rendered by the server's chat template (SmolLM2 adds its default system message);
  * length: the whole rendered prompt in the model's tokens, counted by the server's own
    tokenizer (POST /tokenize with the messages), filled to within max(16, 1%) tokens below the
    target; a target above the context less --max-tokens is cut to it (8k -> 8176 for SmolLM2);
  * answer: greedy (temperature 0), --max-tokens (16) tokens (SmolLM2's usual answer, "The
    special magic number is 12345.", is 12); correct when the key appears in the answer (digits
    separated by "," or spaces are joined first).

  .venv/bin/python bench/niah/run.py                  # 4 configs x 6 lengths x 10 depths
  .venv/bin/python bench/niah/run.py --quick          # 2 lengths x 3 depths, to check the setup
  .venv/bin/python bench/niah/run.py --lengths 2k 8k --depths 0 50 100 --sparsities 0.5
  make bench-niah

Time: every item is a fresh prefill of its whole prompt; on two CPU cores SmolLM2-135M prefills a
few hundred tokens per second and long prompts run slower (attention grows with the position),
so the full grid (4 configs x 60 items, ~245K prompt tokens each) takes about an hour on two free
cores and 2-2.5 hours when other jobs share them; --quick takes 2-4 minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
from bench.mapreduce.gguf_tokenizer import read_gguf_metadata  # noqa: E402
from bench.mapreduce.synth import load_essays, parse_length  # noqa: E402
from server_process import LOOM_LISTENING, ServerProcess  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PATTERN = ROOT / "config" / "duo_attention" / "SmolLM2-135M-Instruct.Q4_1.json"
DEFAULT_HAYSTACK = Path(os.environ.get(
    "LOOM_HAYSTACK_DIR", ROOT.parent / "shared" / "data" / "haystack" / "paul_graham_essays"))

NEEDLE = "The special magic number is {key}."
QUESTION = "What is the special magic number? Reply with the 5-digit number only."
PROMPT = ("There is a special magic number hidden inside the text below. Find it and remember "
          "it.\n\n{context}\n\n{question}")

DEFAULT_LENGTHS = ["1k", "2k", "3k", "4k", "6k", "8k"]
DEFAULT_DEPTHS = [0, 11, 22, 33, 44, 56, 67, 78, 89, 100]  # 10 depths evenly, 0% and 100% included
QUICK_LENGTHS = ["1k", "2k"]
QUICK_DEPTHS = [0, 50, 100]


# ---------------------------------------------------------------------------------------------
# Items

def _is_sentence_start(text: str, i: int) -> bool:
    """Just after whitespace that follows ".", "?" or "!", or after a blank line (the essays
    hard-wrap their lines, so a lone newline is not a boundary)."""
    prev2, prev = text[i - 2], text[i - 1]
    return (prev in " \n" and prev2 in ".?!") or (prev == "\n" and prev2 == "\n")


def sentence_start_before(text: str, pos: int) -> int:
    """The last sentence start at or before `pos`; 0 when there is none."""
    for i in range(min(pos, len(text)), 1, -1):
        if _is_sentence_start(text, i):
            return i
    return 0


def nearest_sentence_start(text: str, pos: int) -> int:
    """The sentence start nearest to `pos` (the earlier one on a tie) that leaves text after it."""
    before = sentence_start_before(text, pos)
    for i in range(max(pos, 2), min(len(text), pos + (pos - before))):
        if _is_sentence_start(text, i):
            return i
    return before


def _rel(path: Path) -> str:
    """`path` relative to the checkout when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def pattern_identity(pattern: Path) -> tuple:
    """What a DuoAttention result depends on: the gates TSV's contents, sink and recent."""
    js = json.loads(pattern.read_text())
    return ((pattern.parent / js["gates"]).read_text(), js.get("sink"), js.get("recent"))


def reusable(prev: dict, name: str, grid: dict, pattern: Path) -> dict | None:
    """The config `name` of an earlier result when it was measured on the same grid (and, for
    DuoAttention, the same gates), else None."""
    if any(prev.get(k) != v for k, v in grid.items()):
        return None
    c = next((c for c in prev.get("configs", []) if c["name"] == name), None)
    if c is None:
        return None
    if c.get("sparsity") is not None:
        try:
            old = Path(prev["pattern"])
            old = old if old.is_absolute() else ROOT / old
            if pattern_identity(old) != pattern_identity(pattern):
                return None
        except (OSError, KeyError, ValueError):
            return None
    return c


def messages(context: str) -> list[dict]:
    return [{"role": "user", "content": PROMPT.format(context=context, question=QUESTION)}]


class ServerTokenizer:
    """The served model's tokenizer and chat template, through /tokenize and /detokenize."""

    def __init__(self, client: httpx.Client, url: str):
        self.client, self.url = client, url

    def encode(self, text: str) -> list[int]:
        r = self.client.post(self.url + "/tokenize",
                             json={"prompt": text, "add_special_tokens": False})
        r.raise_for_status()
        return r.json()["tokens"]

    def decode(self, ids: list[int]) -> str:
        r = self.client.post(self.url + "/detokenize", json={"tokens": ids})
        r.raise_for_status()
        return r.json()["prompt"]

    def count_chat(self, msgs: list[dict]) -> int:
        r = self.client.post(self.url + "/tokenize", json={"messages": msgs})
        r.raise_for_status()
        return r.json()["count"]


def make_item(tok: ServerTokenizer, essays: tuple[str, ...], target: int, depth: int,
              seed: int) -> dict:
    """One prompt of `target` tokens (chat template included) with the needle at `depth` %."""
    rng = random.Random(f"loom-niah:{seed}:{target}:{depth}")
    key = str(rng.randint(10000, 99999))
    order = list(range(len(essays)))
    rng.shuffle(order)
    parts, size, i = [], 0, 0
    while size < target * 5 + 4096:  # a pessimistic 5 characters a token (the essays: ~4.2)
        parts.append(essays[order[i % len(order)]])
        size += len(parts[-1]) + 2
        i += 1
    hay = "\n\n".join(parts)
    while key in hay:
        key = str(rng.randint(10000, 99999))
    needle = NEEDLE.format(key=key)
    ids = tok.encode(hay)
    budget = target - tok.count_chat(messages(needle + " "))
    slack = max(16, target // 100)
    best = None
    for _ in range(12):
        body = tok.decode(ids[:budget])
        if depth >= 100:
            at = sentence_start_before(body, len(body))
            context = body[:at] + needle
        else:
            at = nearest_sentence_start(body, len(tok.decode(ids[:round(budget * depth / 100)])))
            context = body[:at] + needle + " " + body[at:]
        n = tok.count_chat(messages(context))
        if n <= target and (best is None or n > best["prompt_tokens"]):
            best = {"context": context, "prompt_tokens": n, "at": at, "budget": budget}
        if target - slack <= n <= target:
            break
        budget += target - n - (1 if n > target else 0)
    if best is None:
        raise RuntimeError(f"could not fit a {target}-token prompt")
    before = len(tok.encode(best["context"][:best["at"]])) if best["at"] else 0
    return {"target": target, "depth": depth, "key": key, "context": best["context"],
            "prompt_tokens": best["prompt_tokens"],
            "needle_token_depth": round(100 * before / max(1, best["budget"]), 1)}


def score(answer: str, key: str) -> bool:
    return key in re.sub(r"(?<=\d)[,\s](?=\d)", "", answer)


# ---------------------------------------------------------------------------------------------
# Runs

def start_server(args, max_model_len: int, sparsity: float | None) -> ServerProcess:
    argv = [str(args.loom_bin), "serve", "--model", str(args.model), "--port", "0",
            "--grpc-port", "-1", "--threads", str(args.threads),
            "--max-model-len", str(max_model_len), "--max-num-seqs", "4",
            "--max-batched-tokens", str(args.max_batched_tokens), "--request-timeout-s", "0"]
    if sparsity is not None:
        argv += ["--duo-pattern", str(args.pattern), "--duo-sparsity", str(sparsity)]
    return ServerProcess(argv, "loom serve", port_re=LOOM_LISTENING, cwd=str(ROOT),
                         start_new_session=True, health_timeout=120)


def ask(client: httpx.Client, url: str, item: dict, max_tokens: int) -> dict:
    t0 = time.time()
    r = client.post(url + "/v1/chat/completions", json={
        "model": "default", "messages": messages(item["context"]), "temperature": 0,
        "max_tokens": max_tokens})
    r.raise_for_status()
    body = r.json()
    answer = body["choices"][0]["message"]["content"] or ""
    usage = body.get("usage", {})
    return {"answer": answer, "correct": score(answer, item["key"]),
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "cached_tokens": usage.get("prompt_tokens_details", {}).get("cached_tokens", 0),
            "seconds": round(time.time() - t0, 3)}


def run_config(args, name: str, sparsity: float | None, items: list[dict], lengths: list[int],
               depths: list[int], max_model_len: int) -> dict:
    t_start = time.time()
    srv = start_server(args, max_model_len, sparsity)
    startup_s = time.time() - t_start
    rows = []
    try:
        with httpx.Client(timeout=None) as client:
            t0 = time.time()
            for i, item in enumerate(items):
                row = ask(client, srv.url, item, args.max_tokens)
                row.update(target=item["target"], depth=item["depth"], key=item["key"])
                rows.append(row)
                print(f"  {name:>7s} [{i + 1:3d}/{len(items)}] {item['target']:5d} tokens, "
                      f"depth {item['depth']:3d}%: {'ok ' if row['correct'] else 'MISS'} "
                      f"{row['answer'].strip()[:40]!r} (key {item['key']}, {row['seconds']:.1f} s)",
                      flush=True)
            wall_s = time.time() - t0
            stats = client.get(srv.url + "/v1/engine/stats").json()
    finally:
        code = srv.stop()
    if code != 0:
        print(f"warning: {name}: loom serve exited with {code}", file=sys.stderr)
    grid = [[None] * len(lengths) for _ in depths]  # depth-major, as the heat map is drawn
    for row in rows:
        cell = 1.0 if row["correct"] else 0.0
        grid[depths.index(row["depth"])][lengths.index(row["target"])] = cell
    flat = [v for line in grid for v in line if v is not None]
    return {
        "name": name, "sparsity": sparsity,
        "pattern": _rel(args.pattern) if sparsity is not None else None,
        "accuracy": grid, "mean_accuracy": 100.0 * sum(flat) / max(1, len(flat)),
        "wall_s": round(wall_s, 1), "startup_s": round(startup_s, 1),
        "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
        "completion_tokens": sum(r["completion_tokens"] for r in rows),
        "cached_tokens": sum(r["cached_tokens"] for r in rows),
        "engine_stats": stats, "items": rows,
    }


# ---------------------------------------------------------------------------------------------
# Report

def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "loom_commit": commit}


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LinearSegmentedColormap

    # The paper's palette: red (missed) through yellow to green (found).
    cmap = LinearSegmentedColormap.from_list("niah", ["#F0496E", "#EBB839", "#0CD79F"])
    configs = result["configs"]
    lengths, depths = result["lengths"], result["depths"]
    fig, axes = plt.subplots(1, len(configs), figsize=(3.2 * len(configs) + 1.2, 3.6),
                             squeeze=False)
    im = None
    for ax, c in zip(axes[0], configs):
        grid = np.array([[np.nan if v is None else v for v in line] for line in c["accuracy"]],
                        dtype=float)
        im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(len(lengths)))
        ax.set_xticklabels([f"{t // 1024}K" if t % 1024 == 0 else str(t) for t in lengths],
                           fontsize=8)
        ax.set_yticks(range(len(depths)))
        ax.set_yticklabels([f"{d}" for d in depths], fontsize=8)
        ax.set_xticks(np.arange(-0.5, len(lengths)), minor=True)
        ax.set_yticks(np.arange(-0.5, len(depths)), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.8)
        ax.tick_params(which="minor", length=0)
        ax.set_xlabel("context length (tokens)")
        label = ("Full attention" if c["sparsity"] is None
                 else f"DuoAttention {c['sparsity'] * 100:g}%")
        ax.set_title(f"{label}\naccuracy {c['mean_accuracy']:.1f}%", fontsize=10)
    axes[0][0].set_ylabel("depth (%)")
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.025, pad=0.02)
    fig.suptitle(f"Needle in a Haystack: {Path(result['model']).stem}, "
                 f"{result['streaming_note']}", fontsize=10, y=1.06)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _raise_interrupt(signum, frame):
    """SIGTERM unwinds like Ctrl-C, so the `finally` blocks stop the server in use."""
    raise KeyboardInterrupt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build"), help="build folder (BUILD/server/loom)")
    ap.add_argument("--loom-bin", help="the loom binary (default: BUILD/server/loom)")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--pattern", type=Path, default=DEFAULT_PATTERN, help="DuoAttention pattern")
    ap.add_argument("--full-from", type=Path,
                    help="take the full-attention results from this earlier JSON (same lengths, "
                         "depths, seed and max tokens) instead of measuring them again")
    ap.add_argument("--reuse-from", type=Path, nargs="+", default=[],
                    help="take any config (by name: full, duo-50, ...) from these earlier JSONs "
                         "when the grid matches and, for DuoAttention, the gates TSV has the same "
                         "contents (and sink/recent) as --pattern's")
    ap.add_argument("--sparsities", type=float, nargs="*", default=[0.25, 0.5, 0.75],
                    help="DuoAttention configs (fractions of streaming heads); full is always run")
    ap.add_argument("--lengths", nargs="+", default=None,
                    help="prompt lengths in tokens, 1k = 1024 "
                         f"(default {' '.join(DEFAULT_LENGTHS)})")
    ap.add_argument("--depths", type=int, nargs="+", default=None,
                    help=f"needle depths in %% (default {' '.join(map(str, DEFAULT_DEPTHS))})")
    ap.add_argument("--quick", action="store_true",
                    help=f"lengths {' '.join(QUICK_LENGTHS)}, depths "
                         f"{' '.join(map(str, QUICK_DEPTHS))} unless given")
    ap.add_argument("--max-tokens", type=int, default=16,
                    help="answer tokens (SmolLM2 answers 'The special magic number is 12345.': 12)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-batched-tokens", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--haystack", type=Path, default=DEFAULT_HAYSTACK)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "niah.json")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    args.loom_bin = Path(args.loom_bin or Path(args.build) / "server" / "loom").resolve()
    args.pattern = args.pattern.resolve()
    args.model = args.model.resolve()
    if not args.loom_bin.exists():
        ap.error(f"{args.loom_bin} is missing: build it (make build) or pass --build/--loom-bin")
    if args.sparsities and not args.pattern.exists():
        ap.error(f"{args.pattern} is missing")
    if any(not 0 <= s <= 1 for s in args.sparsities):
        ap.error("--sparsities must be in [0, 1]")
    if any(not 0 <= d <= 100 for d in (args.depths or [])):
        ap.error("--depths must be in [0, 100]")

    meta = read_gguf_metadata(args.model, prefix="general.architecture")
    arch = meta.get("general.architecture", "llama")
    context = int(read_gguf_metadata(args.model, prefix=f"{arch}.context_length")
                  [f"{arch}.context_length"])
    lengths = [parse_length(x) for x in
               (args.lengths or (QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS))]
    lengths = sorted({min(t, context - args.max_tokens) for t in lengths})
    depths = sorted(set(args.depths or (QUICK_DEPTHS if args.quick else DEFAULT_DEPTHS)))
    max_model_len = min(context, max(lengths) + args.max_tokens)
    essays = load_essays(str(args.haystack))
    configs = [("full", None)] + [(f"duo-{s * 100:g}", s) for s in args.sparsities]
    pattern_json = json.loads(args.pattern.read_text()) if args.sparsities else None

    # The items, built once with the served tokenizer (a full-attention server, stopped after).
    t0 = time.time()
    srv = start_server(args, max_model_len, None)
    try:
        with httpx.Client(timeout=None) as client:
            tok = ServerTokenizer(client, srv.url)
            items = [make_item(tok, essays, t, d, args.seed) for t in lengths for d in depths]
    finally:
        srv.stop()
    print(f"{len(items)} items ({len(lengths)} lengths x {len(depths)} depths) built in "
          f"{time.time() - t0:.0f} s; {len(configs)} configs, {args.threads} threads", flush=True)

    result = {
        "benchmark": "needle in a haystack", "model": str(args.model), "context": context,
        "max_model_len": max_model_len, "lengths": lengths, "depths": depths,
        "needle": NEEDLE, "prompt": PROMPT, "question": QUESTION, "max_tokens": args.max_tokens,
        "temperature": 0, "seed": args.seed, "threads": args.threads,
        "max_batched_tokens": args.max_batched_tokens, "quick": args.quick,
        "haystack": str(args.haystack),
        "pattern": _rel(args.pattern) if args.sparsities else None,
        "pattern_settings": pattern_json,
        "machine": machine_info(),
        "prompts": [{k: v for k, v in it.items() if k != "context"} for it in items],
        "configs": [],
    }
    result["streaming_note"] = (
        f"sink {pattern_json['sink']}, recent {pattern_json['recent']}"
        + (f" ({pattern_json['method']})" if pattern_json.get("method") else "")
        if pattern_json else "full attention only")
    t_all = time.time()
    grid = {"lengths": lengths, "depths": depths, "seed": args.seed,
            "max_tokens": args.max_tokens}
    earlier = [(path, json.loads(path.read_text())) for path in args.reuse_from]
    full_from = json.loads(args.full_from.read_text()) if args.full_from else None
    for key, want in grid.items() if full_from else ():
        if full_from.get(key) != want:
            ap.error(f"--full-from {args.full_from}: {key} {full_from.get(key)} != {want}")
    for name, sparsity in configs:
        sources = earlier + ([(args.full_from, full_from)] if name == "full" and full_from else [])
        found = next(((path, c) for path, prev in sources
                      if (c := reusable(prev, name, grid, args.pattern)) is not None), None)
        if found:
            path, c = found
            # Where it was measured: an earlier reuse keeps pointing at the original run.
            c = dict(c, reused_from=c.get("reused_from") or _rel(path.resolve()))
            if c.get("pattern"):
                c["pattern"] = _rel(args.pattern)
        else:
            c = run_config(args, name, sparsity, items, lengths, depths, max_model_len)
        result["configs"].append(c)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")  # partial results survive
        print(f"{name}: {c['mean_accuracy']:.1f}% in {c['wall_s']:.0f} s "
              f"({c['prompt_tokens']} prompt tokens)", flush=True)
    result["wall_s"] = round(time.time() - t_all, 1)
    by_name = {c["name"]: c for c in result["configs"]}
    if "duo-50" in by_name:
        result["duo50_minus_full_points"] = round(
            by_name["duo-50"]["mean_accuracy"] - by_name["full"]["mean_accuracy"], 2)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    png = args.out.with_suffix(".png")
    plot(result, png)
    print(f"\n{'config':>8s} {'accuracy':>9s} {'wall s':>7s} {'prompt tokens':>14s}")
    for c in result["configs"]:
        print(f"{c['name']:>8s} {c['mean_accuracy']:>8.1f}% {c['wall_s']:>7.0f} "
              f"{c['prompt_tokens']:>14d}")
    if "duo50_minus_full_points" in result:
        d = result["duo50_minus_full_points"]
        print(f"DuoAttention 50% - full attention: {d:+.1f} points "
              f"({'within' if abs(d) <= 1 else 'NOT within'} 1 point)")
    print(f"wrote {args.out} and {png} ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
