#!/usr/bin/env python3
"""Serving benchmark: a load client with vLLM's definitions (vllm/benchmarks/serve.py).

Starts the real `loom serve` on a free port (or measures --url), sends a fixed number of streaming
/v1/completions requests (stream_options.include_usage, ignore_eos, fixed max_tokens) built from a
fixed seed, at concurrency 1, 4, 16 and 64, and reports per level:

  TTFT  request start -> first chunk with generated text
  TPOT  (e2e - ttft) / (output_tokens - 1), per request
  ITL   gaps between consecutive streamed content chunks
  E2E   request start -> end of stream
  req/s and output tok/s: completed requests / total output tokens over the level's wall time
  (also "all tok/s": prompt + output tokens over the wall time, since on a CPU prefill competes
  with decode for the same cores)

mean, P50 and P99 of each (numpy percentiles, as vLLM). Writes bench/results/serve.json and
bench/results/serve.png (throughput and TTFT P50/P99 vs concurrency), and prints
"output tok/s at 16 concurrent / single stream" (target >= 4x).

--grpc also measures Loom's gRPC API (loom.v1.Generation/Complete, server-streamed) on the same
server with the same workload and definitions, reported beside HTTP's as "loom-grpc".

When `llama-server` is on PATH or LLAMA_SERVER names a binary, it is measured the same way
(`-m MODEL -np 16 -cb`) and Loom / llama-server is printed.

  .venv/bin/python bench/serve/run.py                 # ~2-4 min on two cores
  .venv/bin/python bench/serve/run.py --quick         # fewer requests, shorter outputs
  .venv/bin/python bench/serve/run.py --url http://127.0.0.1:8080   # an already running server
  .venv/bin/python bench/serve/run.py --grpc --concurrency 1 16      # HTTP and gRPC side by side
"""
import argparse
import asyncio
import glob
import json
import os
import random
import shutil
import sys
import time

import httpx
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
LOOM_BIN = os.environ.get("LOOM_BIN", os.path.join(ROOT, "build", "server", "loom"))
ESSAYS = os.path.join(ROOT, "..", "shared", "data", "haystack", "paul_graham_essays")
sys.path.insert(0, os.path.join(ROOT, "tools"))
from server_process import LOOM_LISTENING, ServerProcess  # noqa: E402
from loom_grpc import load_stubs  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Servers

def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_loom(args):
    argv = [args.loom_bin, "serve", "--model", args.model, "--port", "0", "--grpc-port", "0",
            "--threads",
            str(args.threads), "--max-num-seqs", str(args.max_num_seqs)] + args.loom_flag
    return ServerProcess(argv, "loom", port_re=LOOM_LISTENING, cwd=ROOT, start_new_session=True)


def find_llama_server():
    env = os.environ.get("LLAMA_SERVER")
    if env:
        return env if os.path.exists(env) or shutil.which(env) else None
    return shutil.which("llama-server")


def start_llama_server(binary, args):
    port = free_port()
    # n_ctx is shared by the -np slots: give each slot room for the longest prompt plus output.
    ctx = 16 * (args.max_prompt_words * 2 + args.max_tokens + 64)
    argv = [binary, "-m", args.model, "-np", "16", "-cb", "--port", str(port), "--host", "127.0.0.1",
            "-t", str(args.threads), "-c", str(ctx)]
    return ServerProcess(argv, "llama-server", port=port, cwd=ROOT, start_new_session=True)


# ---------------------------------------------------------------------------------------------
# Workload

def make_prompts(n, seed, min_words, max_words):
    """Deterministic prompts: a seeded essay, start offset and length (words; ~1.3 tokens a word)."""
    files = sorted(glob.glob(os.path.join(ESSAYS, "*.txt")))
    if not files:
        raise SystemExit(f"no essays under {ESSAYS}")
    words = {}
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        f = rng.choice(files)
        if f not in words:
            with open(f, encoding="utf-8", errors="replace") as fh:
                words[f] = fh.read().split()
        w = words[f]
        length = rng.randint(min_words, max_words)
        start = rng.randint(0, max(0, len(w) - length))
        prompts.append(" ".join(w[start:start + length]))
    return prompts


class Timing:
    """One request's measurements as its stream arrives (vLLM's definitions)."""

    def __init__(self):
        self.r = {"ok": False, "ttft": 0.0, "itl": [], "latency": 0.0, "output_tokens": 0,
                  "prompt_tokens": 0, "chunks": 0, "error": ""}
        self.start = self.last = time.perf_counter()

    def usage(self, prompt_tokens, output_tokens):
        self.r["prompt_tokens"], self.r["output_tokens"] = prompt_tokens, output_tokens

    def content(self):
        """A chunk with generated text arrived: TTFT for the first, an ITL gap for the others."""
        now = time.perf_counter()
        if self.r["ttft"] == 0.0:
            self.r["ttft"] = now - self.start
        else:
            self.r["itl"].append(now - self.last)
        self.last = now
        self.r["chunks"] += 1

    def done(self):
        r = self.r
        r["latency"] = time.perf_counter() - self.start
        r["ok"] = r["ttft"] > 0 and r["output_tokens"] > 0
        if not r["ok"]:
            r["error"] = "no content or no usage in the stream"
        return r

    def fail(self, error):
        self.r["error"] = error
        return self.r


async def one_request(client, url, model, prompt, max_tokens):
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    t = Timing()
    try:
        async with client.stream("POST", url + "/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                return t.fail(f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}")
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    t.usage(chunk["usage"].get("prompt_tokens", 0),
                            chunk["usage"].get("completion_tokens", 0))
                choices = chunk.get("choices") or []
                if choices and choices[0].get("text"):
                    t.content()
        return t.done()
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        return t.fail(f"{type(e).__name__}: {e}")


async def one_grpc_request(stub, pb, model, prompt, max_tokens):
    """The same request over loom.v1.Generation/Complete: one message per token, usage last."""
    import grpc
    req = pb.CompleteRequest(text=prompt, params=pb.GenerationParams(
        model=model, max_tokens=max_tokens, ignore_eos=True,
        sampling=pb.SamplingParams(temperature=0.0)))
    t = Timing()
    try:
        async for msg in stub.Complete(req, timeout=600):
            if msg.HasField("usage"):
                t.usage(msg.usage.prompt_tokens, msg.usage.completion_tokens)
            if msg.text:
                t.content()
        return t.done()
    except grpc.RpcError as e:
        return t.fail(f"gRPC {e.code()}: {e.details()}")


def stats(values, scale=1000.0):
    if not values:
        return {"mean": None, "p50": None, "p99": None}
    a = np.asarray(values, dtype=np.float64) * scale
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99))}


async def run_level(url, model, prompts, concurrency, max_tokens, grpc_target=None):
    sem = asyncio.Semaphore(concurrency)
    if grpc_target:  # one HTTP/2 channel, as gRPC clients do
        import grpc
        pb, rpc = load_stubs()
        async with grpc.aio.insecure_channel(grpc_target) as channel:
            stub = rpc.GenerationStub(channel)

            async def guarded(p):
                async with sem:
                    return await one_grpc_request(stub, pb, model, p, max_tokens)
            t0 = time.perf_counter()
            results = await asyncio.gather(*(guarded(p) for p in prompts))
            wall = time.perf_counter() - t0
    else:
        limits = httpx.Limits(max_connections=concurrency + 4,
                              max_keepalive_connections=concurrency + 4)
        async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
            async def guarded(p):
                async with sem:
                    return await one_request(client, url, model, p, max_tokens)
            t0 = time.perf_counter()
            results = await asyncio.gather(*(guarded(p) for p in prompts))
            wall = time.perf_counter() - t0
    ok = [r for r in results if r["ok"]]
    out_tokens = sum(r["output_tokens"] for r in ok)
    tpots = [(r["latency"] - r["ttft"]) / (r["output_tokens"] - 1) for r in ok if r["output_tokens"] > 1]
    return {
        "concurrency": concurrency,
        "requests": len(prompts),
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "errors": sorted({r["error"] for r in results if not r["ok"]})[:5],
        "duration_s": wall,
        "total_input_tokens": sum(r["prompt_tokens"] for r in ok),
        "total_output_tokens": out_tokens,
        "request_throughput": len(ok) / wall,
        "output_throughput": out_tokens / wall,
        "total_token_throughput": (out_tokens + sum(r["prompt_tokens"] for r in ok)) / wall,
        "ttft_ms": stats([r["ttft"] for r in ok]),
        "tpot_ms": stats(tpots),
        "itl_ms": stats([x for r in ok for x in r["itl"]]),
        "e2e_latency_ms": stats([r["latency"] for r in ok]),
    }


def served_model(url, fallback):
    try:
        data = httpx.get(url + "/v1/models", timeout=10).json()["data"]
        return data[0]["id"] if data else fallback
    except (httpx.HTTPError, KeyError, IndexError, ValueError):
        return fallback


def bench_server(url, model, args, label, grpc_target=None):
    if not args.served_model:
        model = served_model(url, model)
    levels = []
    for c in args.concurrency:
        n = max(args.min_requests, args.requests_per_conc * c)
        # The gRPC pass runs on the same server right after HTTP's: other prompts (same shape), so
        # that it does not get HTTP's prompts back from the prefix cache.
        seed = args.seed + c + (7919 if grpc_target else 0)
        prompts = make_prompts(n, seed, args.min_prompt_words, args.max_prompt_words)
        # Warm-up (not measured) so the first level does not pay for first-touch of the weights.
        if not levels:
            asyncio.run(run_level(url, model, prompts[:1], 1, 4, grpc_target))
        lv = asyncio.run(run_level(url, model, prompts, c, args.max_tokens, grpc_target))
        levels.append(lv)
        print(f"  [{label}] concurrency {c:3d}: {lv['completed']}/{lv['requests']} ok, "
              f"{lv['output_throughput']:7.1f} out tok/s, {lv['duration_s']:.1f} s", flush=True)
        if lv["failed"]:
            print(f"    errors: {lv['errors']}", flush=True)
    return levels


def fmt(x, w=8, p=1):
    return f"{x:{w}.{p}f}" if x is not None else " " * (w - 1) + "-"


def print_table(label, levels):
    print(f"\n{label}")
    print(f"{'conc':>4} {'req':>4} {'req/s':>7} {'out tok/s':>9} {'all tok/s':>9} | {'TTFT mean':>9} {'p50':>8} {'p99':>8} | "
          f"{'TPOT mean':>9} {'p50':>7} {'p99':>7} | {'ITL p50':>7} {'p99':>7} | {'E2E p50':>8} {'p99':>8}  (ms)")
    for lv in levels:
        t, tp, it, e = lv["ttft_ms"], lv["tpot_ms"], lv["itl_ms"], lv["e2e_latency_ms"]
        print(f"{lv['concurrency']:>4} {lv['completed']:>4} {fmt(lv['request_throughput'], 7, 2)} "
              f"{fmt(lv['output_throughput'], 9)} {fmt(lv['total_token_throughput'], 9)} | {fmt(t['mean'], 9)} {fmt(t['p50'])} {fmt(t['p99'])} | "
              f"{fmt(tp['mean'], 9)} {fmt(tp['p50'], 7)} {fmt(tp['p99'], 7)} | {fmt(it['p50'], 7)} "
              f"{fmt(it['p99'], 7)} | {fmt(e['p50'])} {fmt(e['p99'])}")


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, levels in result["servers"].items():
        cs = [lv["concurrency"] for lv in levels]
        ax1.plot(cs, [lv["output_throughput"] for lv in levels], "o-", label=name)
        ax2.plot(cs, [lv["ttft_ms"]["p50"] for lv in levels], "o-", label=f"{name} P50")
        ax2.plot(cs, [lv["ttft_ms"]["p99"] for lv in levels], "s--", label=f"{name} P99")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent requests")
        ax.set_xticks(result["concurrency"], [str(c) for c in result["concurrency"]])
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax1.set_ylim(bottom=0)
    ax1.set_ylabel("output tokens / s")
    ax1.set_title("Output throughput")
    ax2.set_ylabel("TTFT (ms)")
    ax2.set_yscale("log")
    ax2.set_title("Time to first token")
    fig.suptitle(f"{os.path.basename(result['model'])}, max_tokens {result['max_tokens']}, "
                 f"{result['threads']} engine thread(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="measure this server instead of starting loom serve")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--served-model", default=None, help="the 'model' field sent (default: the GGUF name)")
    ap.add_argument("--loom-bin", default=LOOM_BIN)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("LOOM_BENCH_THREADS", "2")))
    ap.add_argument("--max-num-seqs", type=int, default=16)
    ap.add_argument("--loom-flag", action="append", default=[], help="extra flag for loom serve (repeat)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--requests-per-conc", type=int, default=2)
    ap.add_argument("--min-requests", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--min-prompt-words", type=int, default=40)    # ~50 tokens
    ap.add_argument("--max-prompt-words", type=int, default=230)   # ~300 tokens
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="1 request per concurrency slot (min 4), max_tokens 32")
    ap.add_argument("--no-llama-server", action="store_true")
    ap.add_argument("--grpc", action="store_true",
                    help="also measure the gRPC API (loom.v1) on the same server")
    ap.add_argument("--grpc-target", help="with --url: the server's gRPC host:port")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "serve.json"))
    args = ap.parse_args()
    if args.quick:
        args.requests_per_conc, args.min_requests, args.max_tokens = 1, 4, 32
    model_name = args.served_model or os.path.basename(args.model)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)

    result = {"model": args.model, "threads": args.threads, "max_tokens": args.max_tokens,
              "seed": args.seed, "concurrency": args.concurrency,
              "prompt_words": [args.min_prompt_words, args.max_prompt_words],
              "requests_per_concurrency": args.requests_per_conc, "min_requests": args.min_requests,
              "quick": args.quick, "endpoint": "/v1/completions (stream, include_usage, ignore_eos)",
              "servers": {}}
    t_start = time.time()

    if args.url:
        result["servers"]["loom"] = bench_server(args.url.rstrip("/"), model_name, args, "server")
        if args.grpc and args.grpc_target:
            result["servers"]["loom-grpc"] = bench_server(args.url.rstrip("/"), model_name, args,
                                                          "server gRPC", args.grpc_target)
    else:
        srv = start_loom(args)
        try:
            result["servers"]["loom"] = bench_server(srv.url, model_name, args, "loom")
            if args.grpc:
                result["servers"]["loom-grpc"] = bench_server(srv.url, model_name, args,
                                                              "loom gRPC", srv.grpc_target())
        finally:
            srv.stop()
        result["loom_flags"] = ["--threads", str(args.threads), "--max-num-seqs",
                                str(args.max_num_seqs)] + args.loom_flag

    llama_bin = None if (args.no_llama_server or args.url) else find_llama_server()
    if llama_bin:
        srv = start_llama_server(llama_bin, args)
        try:
            result["servers"]["llama-server"] = bench_server(srv.url, model_name, args, "llama-server")
        finally:
            srv.stop()
        result["llama_server"] = llama_bin
    elif not args.url and not args.no_llama_server:
        print("llama-server not found (not on PATH, LLAMA_SERVER unset): no llama-server comparison")

    for name, levels in result["servers"].items():
        print_table(name, levels)

    loom = result["servers"].get("loom") or result["servers"].get("server")
    by_c = {lv["concurrency"]: lv for lv in loom}
    summary = {}
    if 1 in by_c and 16 in by_c and by_c[1]["output_throughput"] > 0:
        ratio = by_c[16]["output_throughput"] / by_c[1]["output_throughput"]
        summary["tok_s_16_over_1"] = ratio
        print(f"\noutput tok/s at 16 concurrent / single stream: {ratio:.2f}x (target >= 4x) "
              f"[{by_c[16]['output_throughput']:.1f} / {by_c[1]['output_throughput']:.1f}]")
    if "llama-server" in result["servers"]:
        ref = {lv["concurrency"]: lv for lv in result["servers"]["llama-server"]}
        summary["loom_over_llama_server"] = {}
        for c, lv in by_c.items():
            if c in ref and ref[c]["output_throughput"] > 0:
                x = lv["output_throughput"] / ref[c]["output_throughput"]
                summary["loom_over_llama_server"][str(c)] = x
                print(f"Loom / llama-server output tok/s at concurrency {c}: {x:.2f}x"
                      + (" (target >= 1.5x)" if c == 16 else ""))
    if "loom-grpc" in result["servers"]:
        g = {lv["concurrency"]: lv for lv in result["servers"]["loom-grpc"]}
        summary["grpc_over_http"] = {}
        print("\ngRPC vs HTTP (same server, same workload):")
        for c, lv in by_c.items():
            if c in g and lv["output_throughput"] > 0:
                x = g[c]["output_throughput"] / lv["output_throughput"]
                summary["grpc_over_http"][str(c)] = x
                print(f"  concurrency {c:3d}: output tok/s gRPC {g[c]['output_throughput']:.1f} / "
                      f"HTTP {lv['output_throughput']:.1f} = {x:.2f}x; TTFT p50 "
                      f"{fmt(g[c]['ttft_ms']['p50'], 1)} / {fmt(lv['ttft_ms']['p50'], 1)} ms")
    result["summary"] = summary
    result["wall_s"] = time.time() - t_start
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    png = os.path.splitext(args.out)[0] + ".png"
    plot(result, png)
    print(f"wrote {args.out} and {png} ({result['wall_s']:.0f} s)")
    failed = sum(lv["failed"] for levels in result["servers"].values() for lv in levels)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
