"""A small GGUF tensor reader in numpy: header, metadata, tensor infos, alignment, dequantisation.

Used by the DuoAttention calibration (tools/duo_calibrate) to load the exact weights Loom serves,
without llama.cpp or the `gguf` package. The header and metadata are parsed by
bench/mapreduce/gguf_tokenizer.py (the repo's GGUF tokenizer); this reads the tensor infos after
them and the tensors.

Supported tensor types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K (SmolLM2-135M
Q4_1 uses F32, Q4_1 and Q8_0). The GGUF layout is ggml's: `ne[0]` is the row length (the fastest
axis), so a weight of a Linear layer with `ne = [in, out]` comes back as an (out, in) array, the
same orientation as torch's `nn.Linear.weight`.

    r = GgufReader("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    r.metadata["llama.block_count"]          # 30
    w = r.tensor("blk.0.attn_q.weight")      # float32 (576, 576)
    [(t.name, t.type_name, t.shape) for t in r.tensors.values()]
"""
from __future__ import annotations

import mmap
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.mapreduce.gguf_tokenizer import gguf_string, parse_gguf_header  # noqa: E402

# ggml type id -> (name, elements per block, bytes per block)
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 12: ("Q4_K", 256, 144),
    14: ("Q6_K", 256, 210), 30: ("BF16", 1, 2),
}


@dataclass
class TensorInfo:
    name: str
    ne: tuple          # ggml order: ne[0] is the row length
    type_id: int
    offset: int        # from the start of the data section

    @property
    def type_name(self) -> str:
        return GGML_TYPES.get(self.type_id, (f"type{self.type_id}",))[0]

    @property
    def shape(self) -> tuple:
        """numpy shape (slowest axis first): ne reversed."""
        return tuple(reversed(self.ne))

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.ne, dtype=np.int64))

    @property
    def n_bytes(self) -> int:
        _, blk, size = GGML_TYPES[self.type_id]
        return self.n_elements // blk * size


def _f16(raw: np.ndarray) -> np.ndarray:
    """(n, 2) uint8 -> (n, 1) float32 of the little-endian fp16 they hold."""
    return np.ascontiguousarray(raw).view("<f2").astype(np.float32)


def _dequant_blocks(type_id: int, raw: np.ndarray) -> np.ndarray:
    """(n_blocks, block_bytes) uint8 -> (n_blocks, block_elems) float32, as ggml's dequantize_row_*."""
    name = GGML_TYPES[type_id][0]
    if name == "Q4_0":
        d, qs = _f16(raw[:, 0:2]), raw[:, 2:18]
        q = np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.float32) - 8.0
        return d * q
    if name == "Q4_1":
        d, m, qs = _f16(raw[:, 0:2]), _f16(raw[:, 2:4]), raw[:, 4:20]
        q = np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.float32)
        return d * q + m
    if name in ("Q5_0", "Q5_1"):
        off = 2 if name == "Q5_0" else 4
        d = _f16(raw[:, 0:2])
        qh = np.ascontiguousarray(raw[:, off:off + 4]).view("<u4")  # (n, 1)
        qs = raw[:, off + 4:off + 20]
        j = np.arange(16, dtype=np.uint32)
        hi_lo = ((qh >> j) & 1).astype(np.uint8) << 4
        hi_hi = ((qh >> (j + 16)) & 1).astype(np.uint8) << 4
        q = np.concatenate([(qs & 0xF) | hi_lo, (qs >> 4) | hi_hi], axis=1).astype(np.float32)
        if name == "Q5_0":
            return d * (q - 16.0)
        return d * q + _f16(raw[:, 2:4])
    if name == "Q8_0":
        d, qs = _f16(raw[:, 0:2]), raw[:, 2:34].view(np.int8)
        return d * qs.astype(np.float32)
    if name == "Q6_K":
        ql, qh = raw[:, 0:128], raw[:, 128:192]
        sc = raw[:, 192:208].view(np.int8).astype(np.float32)
        d = _f16(raw[:, 208:210])
        out = np.empty((raw.shape[0], 256), np.float32)
        for half in range(2):
            l_lo, l_hi = ql[:, 64 * half:64 * half + 32], ql[:, 64 * half + 32:64 * half + 64]
            h = qh[:, 32 * half:32 * half + 32]
            qs = [(l_lo & 0xF) | (((h >> 0) & 3) << 4), (l_hi & 0xF) | (((h >> 2) & 3) << 4),
                  (l_lo >> 4) | (((h >> 4) & 3) << 4), (l_hi >> 4) | (((h >> 6) & 3) << 4)]
            for k, q in enumerate(qs):  # q covers y[128*half + 32k : +32], scales is = l/16
                s = sc[:, 8 * half + 2 * k:8 * half + 2 * k + 2]      # (n, 2)
                s = np.repeat(s, 16, axis=1)                          # (n, 32)
                base = 128 * half + 32 * k
                out[:, base:base + 32] = d * s * (q.astype(np.float32) - 32.0)
        return out
    if name == "Q4_K":
        d, dmin = _f16(raw[:, 0:2]), _f16(raw[:, 2:4])
        sc_raw, qs = raw[:, 4:16], raw[:, 16:144]
        scales = np.empty((raw.shape[0], 8), np.float32)
        mins = np.empty((raw.shape[0], 8), np.float32)
        for j in range(8):  # ggml get_scale_min_k4
            if j < 4:
                sc_j, m_j = sc_raw[:, j] & 63, sc_raw[:, j + 4] & 63
            else:
                sc_j = (sc_raw[:, j + 4] & 0xF) | ((sc_raw[:, j - 4] >> 6) << 4)
                m_j = (sc_raw[:, j + 4] >> 4) | ((sc_raw[:, j] >> 6) << 4)
            scales[:, j], mins[:, j] = sc_j, m_j
        out = np.empty((raw.shape[0], 256), np.float32)
        for c in range(4):
            q = qs[:, 32 * c:32 * c + 32]
            for k, nib in enumerate((q & 0xF, q >> 4)):
                j = 2 * c + k
                out[:, 32 * j:32 * j + 32] = (d * scales[:, j:j + 1] * nib.astype(np.float32)
                                              - dmin * mins[:, j:j + 1])
        return out
    raise NotImplementedError(f"GGUF tensor type {name} is not supported")


class GgufReader:
    """Parses a GGUF file's header, metadata and tensor infos; `tensor(name)` dequantises one."""

    def __init__(self, path: str):
        self.path = str(path)
        self._f = open(self.path, "rb")
        self._m = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        m = self._m
        self.metadata, n_tensors, pos = parse_gguf_header(m, self.path)
        self.tensors: dict[str, TensorInfo] = {}
        for _ in range(n_tensors):
            name, pos = gguf_string(m, pos)
            (n_dims,) = struct.unpack_from("<I", m, pos)
            ne = struct.unpack_from("<" + "Q" * n_dims, m, pos + 4)
            pos += 4 + 8 * n_dims
            type_id, offset = struct.unpack_from("<IQ", m, pos)
            pos += 12
            self.tensors[name] = TensorInfo(name, tuple(int(x) for x in ne), type_id, offset)
        self.alignment = int(self.metadata.get("general.alignment", 32))
        self.data_offset = (pos + self.alignment - 1) // self.alignment * self.alignment

    def tensor(self, name: str) -> np.ndarray:
        """The tensor dequantised to float32, numpy shape = ne reversed (rows of ne[0])."""
        info = self.tensors[name]
        if info.type_id not in GGML_TYPES:
            raise NotImplementedError(f"{name}: GGUF tensor type {info.type_id} is not supported")
        tname, blk, bsize = GGML_TYPES[info.type_id]
        start = self.data_offset + info.offset
        raw = np.frombuffer(self._m, dtype=np.uint8, count=info.n_bytes, offset=start)
        if tname == "F32":
            flat = raw.view("<f4").astype(np.float32)
        elif tname == "F16":
            flat = raw.view("<f2").astype(np.float32)
        elif tname == "BF16":
            flat = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            flat = _dequant_blocks(info.type_id, raw.reshape(-1, bsize)).reshape(-1)
        return flat.reshape(info.shape)

    def close(self) -> None:
        self._m.close()
        self._f.close()
