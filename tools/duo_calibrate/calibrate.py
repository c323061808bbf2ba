"""DuoAttention gate calibration (arXiv 2410.10819; reference mit-han-lab/duo-attention train.py).

Optimises one gate alpha in [0, 1] per (layer, KV head) of the frozen model so that the gated
model (each head = alpha * full + (1 - alpha) * streaming attention, model.py) keeps the full
model's final hidden states (after the final RMSNorm, as the reference's LlamaModel output) on
synthetic multi-passkey samples (data.py), with an L1 push towards streaming:

    loss = mean over supervised positions of mean_d (h_gated - h_full)^2  +  reg * mean |alpha|

alpha starts at 1 and is clamped to [0, 1] after every step; Adam (the reference's AdamW with no
weight decay), the reference's learning-rate schedule (linear warm-up over the first steps/5 from
0.1x, flat, linear cool-down over the last steps/5 to 0.1x). The full-attention targets are
computed once per sample (no grad) for a fixed pool of samples the steps cycle through.

Writes <out-prefix>.tsv (a row per layer, a tab-separated gate per KV head: what
engine/model/duo_pattern.cc reads) and <out-prefix>.json ({"gates", "sink", "recent", "method",
"note", ...}; the loader ignores keys other than gates/sink/recent). "sink"/"recent" there are the
serving window (--serve-sink/--serve-recent), not the calibration window (--sink/--recent).

    nice -n 10 /usr/bin/python3 -m tools.duo_calibrate --steps 64 --seq-len 1024 \\
        --min-seq-len 512 --sink 16 --recent 64 --lr 0.05 \\
        --out-prefix config/duo_attention/SmolLM2-135M-Instruct.Q4_1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tools.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import tools.duo_calibrate  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

import numpy as np
import torch

from tools.duo_calibrate.data import PasskeySamples, default_haystack_dir, load_tokenizer
from tools.duo_calibrate.model import LlamaTorch

ROOT = Path(__file__).resolve().parents[2]


def lr_factor(step: int, steps: int) -> float:
    """The reference's LambdaLR: min(1, max((s+1)/(N/5), 0.1), max((N-s)/(N/5), 0.1))."""
    k = max(1, steps // 5)
    return min(1.0, max((step + 1) / k, 0.1), max((steps - step) / k, 0.1))


def build_pool(model: LlamaTorch, gen: PasskeySamples, n: int, min_len: int, max_len: int,
               rng: np.random.Generator, log=print) -> list[dict]:
    """n samples with lengths spread over [min_len, max_len] and their full-attention targets."""
    lengths = np.linspace(min_len, max_len, n).round().astype(int) if n > 1 else [max_len]
    pool = []
    for i, length in enumerate(rng.permutation(lengths)):
        t0 = time.time()
        s = gen.sample(int(length))
        tokens = torch.tensor(s.tokens)
        sup = torch.tensor(s.supervised)
        with torch.no_grad():
            target = model.forward(tokens)[sup]
        pool.append({"tokens": tokens, "sup": sup, "target": target, "keys": s.keys})
        log(f"  sample {i}: {len(s.tokens)} tokens, {len(s.supervised)} supervised, keys "
            f"{' '.join(s.keys)} at depths {' '.join(f'{d:.2f}' for d in s.depths)} "
            f"({time.time() - t0:.1f} s)")
    return pool


def train(model: LlamaTorch, pool: list[dict], steps: int, lr: float, reg: float, sink: int,
          recent: int, seed: int = 0, checkpoint: bool = False, time_budget_s: float = 0,
          partial_path: str | None = None, log=print) -> tuple[torch.Tensor, list[dict]]:
    """Runs the optimisation; returns the gates (n_layers, n_kv_heads) and per-step records."""
    c = model.cfg
    gates = torch.ones(c.n_layers, c.n_kv_heads, requires_grad=True)
    opt = torch.optim.Adam([gates], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps))
    rng = np.random.default_rng(seed + 1)
    order: list[int] = []
    history = []
    t_start = time.time()
    for step in range(steps):
        if not order:
            order = list(rng.permutation(len(pool)))
        ex = pool[order.pop()]
        t0 = time.time()
        h = model.forward(ex["tokens"], gates=gates, sink=sink, recent=recent,
                          checkpoint=checkpoint)
        distill = (h[ex["sup"]] - ex["target"]).pow(2).mean(-1).mean()
        l1 = gates.abs().mean()
        loss = distill + reg * l1
        opt.zero_grad()
        loss.backward()
        cur_lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        with torch.no_grad():
            gates.clamp_(0, 1)
        g = gates.detach()
        rec = {"step": step + 1, "len": int(ex["tokens"].shape[0]), "distill": float(distill),
               "l1": float(l1), "lr": cur_lr, "s": time.time() - t0,
               "mean_gate": float(g.mean()), "below_half": int((g < 0.5).sum()),
               "zero": int((g == 0).sum())}
        history.append(rec)
        log(f"step {rec['step']:4d}/{steps} len {rec['len']:5d} distill {rec['distill']:.5f} "
            f"l1 {rec['l1']:.4f} lr {cur_lr:.4f} mean gate {rec['mean_gate']:.3f} "
            f"<0.5: {rec['below_half']:2d} =0: {rec['zero']:2d}  {rec['s']:.1f} s")
        if partial_path and (step + 1) % 10 == 0:
            write_tsv(partial_path, g)
        if time_budget_s and time.time() - t_start > time_budget_s and step + 1 < steps:
            log(f"time budget of {time_budget_s:.0f} s spent: stopping after {step + 1} steps")
            break
    return gates.detach().clone(), history


def write_tsv(path: str, gates: torch.Tensor) -> None:
    rows = ["\t".join(f"{float(v):.4f}" for v in row) for row in gates]
    Path(path).write_text("\n".join(rows) + "\n")


def read_tsv(path: str) -> np.ndarray:
    rows = [ln.split("\t") for ln in Path(path).read_text().splitlines() if ln.strip()]
    return np.array([[float(v) for v in r] for r in rows], dtype=np.float64)


def loss_summary(history: list[dict]) -> str:
    """Distillation loss averaged over the first, middle and last fifth of the steps."""
    if not history:
        return "no steps"
    d = np.array([h["distill"] for h in history])
    k = max(1, len(d) // 5)
    m0 = len(d) // 2 - k // 2
    return (f"distill loss: first {k} steps {d[:k].mean():.5f}, middle {d[m0:m0 + k].mean():.5f}, "
            f"last {k} {d[-k:].mean():.5f} (max {d.max():.5f} at step {int(d.argmax()) + 1})")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python3 -m tools.duo_calibrate",
                                 description="DuoAttention gate calibration (CPU, PyTorch)")
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--haystack-dir", default=default_haystack_dir())
    ap.add_argument("--out-prefix", required=True,
                    help="writes <prefix>.tsv and <prefix>.json (gates path relative to the JSON)")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=1024, help="longest sample, tokens")
    ap.add_argument("--min-seq-len", type=int, default=0,
                    help="shortest sample (default seq-len/2); lengths spread evenly between")
    ap.add_argument("--samples", type=int, default=8,
                    help="pool of samples the steps cycle through")
    ap.add_argument("--num-passkeys", type=int, default=4)
    ap.add_argument("--supervise", choices=["answer", "qa"], default="answer")
    ap.add_argument("--sink", type=int, default=16, help="calibration streaming sink")
    ap.add_argument("--recent", type=int, default=64, help="calibration streaming recent window")
    ap.add_argument("--serve-sink", type=int, default=64, help="\"sink\" written to the JSON")
    ap.add_argument("--serve-recent", type=int, default=256, help="\"recent\" written to the JSON")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--reg", type=float, default=0.05)
    ap.add_argument("--checkpoint", action="store_true",
                    help="recompute each layer in backward (less memory, ~1/3 more time)")
    ap.add_argument("--time-budget-min", type=float, default=0,
                    help="stop training after this many minutes (0: run all steps)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    min_len = args.min_seq_len or args.seq_len // 2
    t_all = time.time()

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(f"scale: {args.steps} steps, samples {min_len}-{args.seq_len} tokens ({args.samples} in "
        f"the pool, {args.num_passkeys} passkeys each, supervise {args.supervise}), calibration "
        f"sink {args.sink} recent {args.recent}, lr {args.lr}, reg {args.reg}, seed {args.seed}, "
        f"{args.threads} threads (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')})")
    model = LlamaTorch.from_gguf(args.model)
    gen = PasskeySamples(load_tokenizer(args.model), args.haystack_dir, seed=args.seed,
                         num_passkeys=args.num_passkeys, supervise=args.supervise)
    log(f"model {args.model}: {model.cfg.n_layers} layers x {model.cfg.n_kv_heads} KV heads; "
        f"building the pool")
    t0 = time.time()
    pool = build_pool(model, gen, args.samples, min_len, args.seq_len,
                      np.random.default_rng(args.seed), log)
    pool_s = time.time() - t0
    out = Path(args.out_prefix)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = str(out) + ".partial.tsv"
    t0 = time.time()
    gates, history = train(model, pool, args.steps, args.lr, args.reg, args.sink, args.recent,
                           seed=args.seed, checkpoint=args.checkpoint,
                           time_budget_s=args.time_budget_min * 60, partial_path=partial, log=log)
    train_s = time.time() - t0
    done = len(history)
    per_step = train_s / max(1, done)
    summary = loss_summary(history)
    tsv = out.with_name(out.name + ".tsv")
    write_tsv(str(tsv), gates)
    if os.path.exists(partial):
        os.remove(partial)
    g = gates.numpy()
    note = (f"tools/duo_calibrate: gates optimised as in the paper (L2 between gated and full "
            f"final hidden states after the final norm, on the answer tokens, + {args.reg} x "
            f"mean|gate|; Adam lr {args.lr}, reference schedule), scaled down for a 2-core CPU: "
            f"{done} steps (reference 2000), {args.samples} samples of {min_len}-{args.seq_len} "
            f"tokens with {args.num_passkeys} numeric passkeys (reference 1K-32K tokens, 10 "
            f"passkeys), calibration window sink {args.sink} recent {args.recent} (reference "
            f"128/256; served with the sink/recent above), seed {args.seed}. Time: pool "
            f"{pool_s:.0f} s, training {train_s:.0f} s ({per_step:.1f} s/step, {args.threads} "
            f"threads). {summary}.")
    meta = {"gates": tsv.name, "sink": args.serve_sink, "recent": args.serve_recent,
            "method": "DuoAttention optimisation (tools/duo_calibrate), scaled down",
            "note": note,
            "calibration": {"steps": done, "seq_len": [min_len, args.seq_len],
                            "samples": args.samples, "num_passkeys": args.num_passkeys,
                            "supervise": args.supervise, "sink": args.sink,
                            "recent": args.recent, "lr": args.lr, "reg": args.reg,
                            "seed": args.seed, "seconds_per_step": round(per_step, 2),
                            "total_seconds": round(time.time() - t_all)}}
    json_path = out.with_name(out.name + ".json")
    json_path.write_text(json.dumps(meta, indent=2) + "\n")
    log(f"{summary}")
    log(f"gates: mean {g.mean():.3f}, {int((g < 0.5).sum())} of {g.size} below 0.5, "
        f"{int((g == 0).sum())} at 0; per layer mean: "
        + " ".join(f"{v:.2f}" for v in g.mean(axis=1)))
    log(f"wrote {tsv} and {json_path} ({done} steps, {per_step:.1f} s/step, total "
        f"{time.time() - t_all:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
