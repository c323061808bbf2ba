#!/usr/bin/env python3
"""Engine benchmark driver: runs Loom's bench_engine, then (when llama-cpp-python is installed) measures
llama.cpp on the same GGUF with the same prompt length, decode length and thread counts, prints
Loom / llama.cpp and Loom / roofline, and writes bench/results/engine.json.

  .venv/bin/python bench/engine/run.py [--build build] [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure_llama_cpp(model, threads, prefill, decode, reps):
    from llama_cpp import Llama, __version__
    llm = Llama(model_path=model, n_ctx=prefill + decode + 16, n_batch=prefill, n_ubatch=prefill,
                n_threads=threads, n_threads_batch=threads, verbose=False, seed=0)
    prompt = [1000 + (i * 7919) % 20000 for i in range(prefill)]
    best_p = best_d = 0.0
    for _ in range(reps):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        best_p = max(best_p, prefill / (time.perf_counter() - t0))
        t1 = time.perf_counter()
        for i in range(decode):
            # The token fed does not change the cost; Loom's side feeds its argmax.
            llm.eval([prompt[i % prefill]])
        best_d = max(best_d, decode / (time.perf_counter() - t1))
    return {"version": __version__, "prefill_tok_s": best_p, "decode_tok_s": best_d}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "engine.json"))
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    loom_json = args.out.replace(".json", "_loom.json")
    subprocess.run([os.path.join(args.build, "bench", "engine", "bench_engine"), "--model", args.model,
                    "--out", loom_json, "--reps", str(args.reps)], check=True)
    with open(loom_json) as f:
        result = json.load(f)
    os.remove(loom_json)
    try:
        import llama_cpp  # noqa: F401
        have_llama = True
    except ImportError:
        have_llama = False
        print("llama-cpp-python is not installed: no llama.cpp comparison "
              "(.venv/bin/pip install -r requirements-tools.txt)")
    for threads, t in result["threads"].items():
        if have_llama:
            ref = measure_llama_cpp(args.model, int(threads), result["prefill_tokens"],
                                    result["decode_tokens"], args.reps)
            t["llama_cpp"] = ref
            t["prefill_vs_llama_cpp"] = t["prefill_tok_s"] / ref["prefill_tok_s"]
            t["decode_vs_llama_cpp"] = t["decode_tok_s"] / ref["decode_tok_s"]
            print(f"threads={threads}: llama.cpp {ref['version']}: prefill {ref['prefill_tok_s']:.1f} tok/s, "
                  f"decode {ref['decode_tok_s']:.1f} tok/s")
            print(f"threads={threads}: Loom / llama.cpp: prefill {t['prefill_vs_llama_cpp']:.2f}x, "
                  f"decode {t['decode_vs_llama_cpp']:.2f}x")
        print(f"threads={threads}: Loom decode / roofline: {t['decode_vs_roofline']:.2f}")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
