"""Llama forward in PyTorch (float32, CPU) with DuoAttention gates, built from Loom's GGUF.

The graph follows Loom's CPU forward (engine/model/cpu_backend.cc): token embedding, per layer
RMSNorm -> Q/K/V -> RoPE (ggml "normal" style: rotated pairs are adjacent elements (2i, 2i+1), the
GGUF Q/K weights being permuted for it; angles built as ggml does, by repeated float32
multiplication) -> causal attention (GQA: query head h reads KV head h // group) -> output
projection -> residual; RMSNorm -> SwiGLU feed-forward -> residual; final RMSNorm; logits against
the output matrix, or the token embedding when there is none (tied, as in SmolLM2).

DuoAttention training form (arXiv 2410.10819; reference duo_attn/patch/llama.py): every KV head
has a gate alpha in [0, 1] shared by its query heads, and a head's attention output is

    alpha * full_causal_attention + (1 - alpha) * streaming_attention

where the streaming pattern lets the query at position p see [0, min(sink, p+1)) and
[max(sink, p+1-recent), p] -- exactly Loom's streaming-head rule (docs/duo_attention.md). Both
softmaxes share the scores, so the mixture is applied to the probabilities before the single
P @ V product (same result, one matmul fewer). Weights are plain tensors without gradients; only
the gates are trained.

    m = LlamaTorch.from_gguf("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    logits = m.logits(m.forward(torch.tensor(ids)))               # full attention
    gates = torch.ones(m.cfg.n_layers, m.cfg.n_kv_heads, requires_grad=True)
    h = m.forward(torch.tensor(ids), gates=gates, sink=16, recent=64)   # final hidden states
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.utils.checkpoint

from tools.duo_calibrate.gguf_reader import GgufReader


@dataclass
class LlamaConfig:
    n_layers: int
    d_model: int
    ffn_dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope_dim: int
    rope_freq_base: float
    rope_freq_scale: float
    rms_eps: float
    vocab_size: int

    @staticmethod
    def from_metadata(md: dict, vocab_rows: int) -> "LlamaConfig":
        """As engine/model/model_config.cc reads it (defaults included)."""
        arch = md["general.architecture"]
        if arch not in ("llama", "mistral", "granite"):
            raise ValueError(f"architecture {arch!r} is not Llama-like")
        p = arch + "."
        n_heads = int(md[p + "attention.head_count"])
        d_model = int(md[p + "embedding_length"])
        head_dim = int(md.get(p + "attention.key_length", d_model // n_heads))
        scale = float(md.get(p + "rope.scale_linear", 0.0))
        return LlamaConfig(
            n_layers=int(md[p + "block_count"]), d_model=d_model,
            ffn_dim=int(md[p + "feed_forward_length"]), n_heads=n_heads,
            n_kv_heads=int(md.get(p + "attention.head_count_kv", n_heads)), head_dim=head_dim,
            rope_dim=int(md.get(p + "rope.dimension_count", head_dim)),
            rope_freq_base=float(md.get(p + "rope.freq_base", 10000.0)),
            rope_freq_scale=1.0 / scale if scale > 0 else 1.0,
            rms_eps=float(md[p + "attention.layer_norm_rms_epsilon"]),
            vocab_size=int(md.get(p + "vocab_size", vocab_rows)))


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_cos_sin(cfg: LlamaConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, rope_dim/2) cos and sin of the angles for positions 0..n-1, built like ggml/Loom:
    theta_i = freq_scale * pos * ts^i with ts = base^(-2/rope_dim), the power by repeated float32
    multiplication."""
    half = cfg.rope_dim // 2
    ts = np.float32(np.power(np.float32(cfg.rope_freq_base), np.float32(-2.0 / cfg.rope_dim)))
    a = np.empty((n, half), np.float32)
    a[:, 0] = np.arange(n, dtype=np.float32)
    a[:, 1:] = ts
    theta = np.cumprod(a, axis=1, dtype=np.float32) * np.float32(cfg.rope_freq_scale)
    return torch.from_numpy(np.cos(theta)), torch.from_numpy(np.sin(theta))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rope_dim: int) -> torch.Tensor:
    """x: (heads, T, head_dim); rotates the adjacent pairs (2i, 2i+1) of the first rope_dim."""
    r = x[..., :rope_dim]
    x0, x1 = r[..., 0::2], r[..., 1::2]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)
    if rope_dim == x.shape[-1]:
        return out
    return torch.cat([out, x[..., rope_dim:]], dim=-1)


def attention_masks(T: int, sink: int, recent: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive (T, T) masks: causal, and streaming (sink + the `recent` up to the query)."""
    i = torch.arange(T).view(-1, 1)
    j = torch.arange(T).view(1, -1)
    causal = j <= i
    streaming = causal & ((j < sink) | (j >= i + 1 - recent))
    neg = torch.tensor(float("-inf"))
    zero = torch.tensor(0.0)
    return torch.where(causal, zero, neg), torch.where(streaming, zero, neg)


class LlamaTorch:
    """The frozen model; `forward` gives final hidden states (after the final RMSNorm)."""

    def __init__(self, cfg: LlamaConfig, weights: dict[str, torch.Tensor]):
        self.cfg = cfg
        self.w = weights
        self._rope = None

    @staticmethod
    def mm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x @ w.T (w in nn.Linear orientation). Plain float32: Loom (like llama.cpp) rounds
        activations to 8 bits for its quantized matmuls, which moves logits by up to ~0.5."""
        return x @ w.T

    @staticmethod
    def from_gguf(path: str) -> "LlamaTorch":
        r = GgufReader(path)
        emb = r.tensor("token_embd.weight")
        cfg = LlamaConfig.from_metadata(r.metadata, emb.shape[0])
        w = {"token_embd": torch.from_numpy(emb)}
        w["output_norm"] = torch.from_numpy(r.tensor("output_norm.weight").copy())
        w["output"] = (torch.from_numpy(r.tensor("output.weight")) if "output.weight" in r.tensors
                       else w["token_embd"])
        names = {"attn_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v",
                 "wo": "attn_output", "ffn_norm": "ffn_norm", "w_gate": "ffn_gate",
                 "w_up": "ffn_up", "w_down": "ffn_down"}
        for li in range(cfg.n_layers):
            for k, g in names.items():
                w[f"{li}.{k}"] = torch.from_numpy(r.tensor(f"blk.{li}.{g}.weight").copy())
        r.close()
        return LlamaTorch(cfg, w)

    def rope(self, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._rope is None or self._rope[0].shape[0] < T:
            self._rope = rope_cos_sin(self.cfg, max(T, 256))
        return self._rope[0][:T], self._rope[1][:T]

    def _attention(self, li, h, cos, sin, masks, gate):
        c, w = self.cfg, self.w
        T = h.shape[0]
        G = c.n_heads // c.n_kv_heads
        xn = rms_norm(h, w[f"{li}.attn_norm"], c.rms_eps)
        q = self.mm(xn, w[f"{li}.wq"]).view(T, c.n_heads, c.head_dim).transpose(0, 1)
        k = self.mm(xn, w[f"{li}.wk"]).view(T, c.n_kv_heads, c.head_dim).transpose(0, 1)
        v = self.mm(xn, w[f"{li}.wv"]).view(T, c.n_kv_heads, c.head_dim).transpose(0, 1)
        q = apply_rope(q, cos, sin, c.rope_dim)
        k = apply_rope(k, cos, sin, c.rope_dim)
        q = q.reshape(c.n_kv_heads, G, T, c.head_dim) * (1.0 / float(np.sqrt(c.head_dim)))
        s = q @ k.unsqueeze(1).transpose(-1, -2)                # (KV, G, T, T)
        p = torch.softmax(s + masks[0], dim=-1)
        if gate is not None:  # a * full + (1 - a) * streaming, written with one product
            a = gate.clamp(0, 1).view(c.n_kv_heads, 1, 1, 1)
            ps = torch.softmax(s + masks[1], dim=-1)
            p = ps + a * (p - ps)
        o = (p @ v.unsqueeze(1)).reshape(c.n_heads, T, c.head_dim).transpose(0, 1)
        return self.mm(o.reshape(T, c.n_heads * c.head_dim), w[f"{li}.wo"])

    def _layer(self, li, h, cos, sin, masks, gate):
        c, w = self.cfg, self.w
        h = h + self._attention(li, h, cos, sin, masks, gate)
        xn = rms_norm(h, w[f"{li}.ffn_norm"], c.rms_eps)
        g = self.mm(xn, w[f"{li}.w_gate"])
        u = self.mm(xn, w[f"{li}.w_up"])
        return h + self.mm(torch.nn.functional.silu(g) * u, w[f"{li}.w_down"])

    def forward(self, tokens: torch.Tensor, gates: torch.Tensor | None = None, sink: int = 0,
                recent: int = 1, checkpoint: bool = False) -> torch.Tensor:
        """(T,) token ids -> (T, d_model) final hidden states (after the final RMSNorm).
        gates: (n_layers, n_kv_heads) or None for plain full attention."""
        c = self.cfg
        T = int(tokens.shape[0])
        cos, sin = self.rope(T)
        masks = attention_masks(T, sink, recent)
        h = self.w["token_embd"][tokens]
        for li in range(c.n_layers):
            g = None if gates is None else gates[li]
            if checkpoint and g is not None and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(self._layer, li, h, cos, sin, masks, g,
                                                      use_reentrant=False)
            else:
                h = self._layer(li, h, cos, sin, masks, g)
        return rms_norm(h, self.w["output_norm"], c.rms_eps)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.mm(hidden, self.w["output"])

    @torch.no_grad()
    def greedy(self, prompt: list[int], steps: int) -> list[int]:
        """Greedy continuation (recomputes the whole sequence each step; for short tests)."""
        ids = list(prompt)
        for _ in range(steps):
            h = self.forward(torch.tensor(ids))
            ids.append(int(torch.argmax(self.logits(h[-1:])[0])))
        return ids[len(prompt):]
