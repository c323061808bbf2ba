"""Compares two DuoAttention gate files, and optionally checks them on held-out passkey samples.

Statistics: Spearman rank correlation of the 90 gates, per-layer means, and the streaming heads
each file gives at a sparsity under Loom's rule (the floor(sparsity * n) lowest gates, ties in
(layer, head) order; engine/model/duo_pattern.cc) with their overlap.

With --eval N: N held-out samples (a seed the calibration did not use) are run with full attention
and with each file's heads at --sparsity made binary (streaming heads see only the first `sink`
and last `recent` positions, the others everything), and the tool reports the hidden-state
distillation loss on the answer tokens and passkey retrieval under teacher forcing (a key counts
when the model's argmax predicts every one of its answer tokens).

    /usr/bin/python3 -m tools.duo_calibrate.compare \\
        config/duo_attention/SmolLM2-135M-Instruct.Q4_1.tsv \\
        config/duo_attention/SmolLM2-135M-Instruct.Q4_1.proxy.tsv --names calibrated proxy \\
        --eval 4 --seq-len 1024
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import tools.duo_calibrate  # noqa: F401

import numpy as np

from tools.duo_calibrate.calibrate import read_tsv


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), 1-based."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        m = x == v
        if m.sum() > 1:
            r[m] = r[m].mean()
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = ranks(a), ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def streaming_heads(gates: np.ndarray, sparsity: float) -> np.ndarray:
    """Boolean (layers, heads): Loom's DuoPattern::StreamingHeads."""
    flat = gates.ravel()
    k = min(len(flat), int(np.floor(sparsity * len(flat))))
    order = np.argsort(flat, kind="stable")
    s = np.zeros(len(flat), dtype=bool)
    s[order[:k]] = True
    return s.reshape(gates.shape)


def describe(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray, sparsities) -> str:
    lines = [f"Spearman({name_a}, {name_b}) over {a.size} heads: {spearman(a, b):.3f}; per-layer "
             f"means: {spearman(a.mean(1), b.mean(1)):.3f}"]
    for nm, g in ((name_a, a), (name_b, b)):
        lines.append(f"{nm} per-layer mean: " + " ".join(f"{v:.2f}" for v in g.mean(1)))
    for sp in sparsities:
        sa, sb = streaming_heads(a, sp), streaming_heads(b, sp)
        lines.append(f"sparsity {sp}: {int(sa.sum())} streaming heads; both stream "
                     f"{int((sa & sb).sum())}, only {name_a} {int((sa & ~sb).sum())}, only "
                     f"{name_b} {int((~sa & sb).sum())}")
        for nm, s in ((name_a, sa), (name_b, sb)):
            per_layer = s.sum(1)
            lines.append(f"  {nm} streaming per layer: " + "".join(str(int(v)) for v in per_layer)
                         + f"  (layers all-streaming: {[int(i) for i in np.where(per_layer == s.shape[1])[0]]})")
    return "\n".join(lines)


def evaluate(model, samples, patterns: dict, sink: int, recent: int, log=print) -> dict:
    """patterns: name -> (layers, heads) binary gates (1 = full) or None for full attention."""
    import torch
    res = {n: {"distill": [], "keys_ok": 0, "keys": 0} for n in patterns}
    for i, s in enumerate(samples):
        tokens = torch.tensor(s.tokens)
        sup = torch.tensor(s.supervised)
        nxt = tokens[sup + 1]
        with torch.no_grad():
            ref = model.forward(tokens)[sup]
            for name, g in patterns.items():
                t0 = time.time()
                h = ref if g is None else model.forward(
                    tokens, gates=torch.tensor(g, dtype=torch.float32), sink=sink,
                    recent=recent)[sup]
                ok = (model.logits(h).argmax(-1) == nxt).numpy()
                per_key = ok.reshape(len(s.keys), -1).all(axis=1)
                r = res[name]
                r["distill"].append(float((h - ref).pow(2).mean(-1).mean()))
                r["keys_ok"] += int(per_key.sum())
                r["keys"] += len(s.keys)
                log(f"  sample {i} ({len(s.tokens)} tokens) {name}: distill "
                    f"{r['distill'][-1]:.5f}, keys {int(per_key.sum())}/{len(s.keys)} "
                    f"({time.time() - t0:.1f} s)")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m tools.duo_calibrate.compare")
    ap.add_argument("a", help="gates TSV (e.g. the calibrated one)")
    ap.add_argument("b", help="gates TSV to compare with (e.g. the proxy)")
    ap.add_argument("--names", nargs=2, default=None, help="labels for a and b")
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.75])
    ap.add_argument("--eval", type=int, default=0, help="held-out samples to run (0: none)")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--sink", type=int, default=16)
    ap.add_argument("--recent", type=int, default=64)
    ap.add_argument("--num-passkeys", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1000, help="held-out data seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[2] / "models" /
                                           "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--haystack-dir", default=None)
    args = ap.parse_args(argv)
    a, b = read_tsv(args.a), read_tsv(args.b)
    if a.shape != b.shape:
        print(f"shapes differ: {a.shape} vs {b.shape}")
        return 1
    na, nb = args.names or (Path(args.a).stem, Path(args.b).stem)
    if na == nb:
        na, nb = "A", "B"
    print(describe(na, a, nb, b, args.sparsity), flush=True)
    if args.eval <= 0:
        return 0
    import torch

    from tools.duo_calibrate.data import PasskeySamples, default_haystack_dir, load_tokenizer
    from tools.duo_calibrate.model import LlamaTorch
    torch.set_num_threads(args.threads)
    model = LlamaTorch.from_gguf(args.model)
    gen = PasskeySamples(load_tokenizer(args.model), args.haystack_dir or default_haystack_dir(),
                         seed=args.seed, num_passkeys=args.num_passkeys)
    samples = [gen.sample(args.seq_len) for _ in range(args.eval)]
    for sp in args.sparsity:
        pats = {"full": None}
        for nm, g in ((na, a), (nb, b)):
            pats[nm] = (~streaming_heads(g, sp)).astype(np.float32)
            pats[nm + "-inverted"] = (~streaming_heads(-g, sp)).astype(np.float32)
        if sp != args.sparsity[0]:
            pats.pop("full")
        print(f"held-out eval, sparsity {sp}, window sink {args.sink} recent {args.recent}:",
              flush=True)
        res = evaluate(model, samples, pats, args.sink, args.recent,
                       log=lambda m: print(m, flush=True))
        for nm, r in res.items():
            print(f"  {nm}: mean distill {np.mean(r['distill']):.5f}, keys retrieved "
                  f"{r['keys_ok']}/{r['keys']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
