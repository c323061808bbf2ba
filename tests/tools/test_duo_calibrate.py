"""tools/duo_calibrate: the PyTorch forward is the model Loom serves, and a short calibration runs.

(a) The torch forward (weights dequantised from the GGUF by tools/duo_calibrate/gguf_reader.py)
against llama.cpp's numbers in tests/data/reference_llamacpp.json, with the tolerance and the
near-tie rule of Loom's own reference test (tests/engine/model/reference_test.cc): first-step
top-10 logits within 0.6 relative to the top-1 logit (and within 1.0 in absolute value: a float32
forward against 8-bit activations can shift all logits of a step together), and teacher-forced over llama.cpp's 48 greedy tokens the argmax equals
llama.cpp's token at every step where llama.cpp's top-2 margin is at least 0.6. (Loom and
llama.cpp round activations to 8 bits for their quantized matmuls; this forward is plain float32,
hence a tolerance rather than equality. Loom passes the same check, so the two agree.)
(b) The DuoAttention pieces: gate 1 is full attention exactly, the streaming mask is Loom's rule,
and a 2-step calibration writes a 30 x 3 gates TSV in [0, 1] that the JSON names, gates moved.

Needs /usr/bin/python3 with Debian's python3-torch and python3-pytest; ~45 s on 2 cores (more under load):
    /usr/bin/python3 -m pytest tests/tools/test_duo_calibrate.py -q
"""
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import tools.duo_calibrate  # noqa: E402,F401  (sets OMP_WAIT_POLICY: must precede torch)

if os.environ.get("LOOM_REQUIRE_TORCH"):  # under CTest a missing torch fails, not skips
    import torch  # noqa: F401
else:
    torch = pytest.importorskip("torch")
from tools.duo_calibrate import calibrate  # noqa: E402
from tools.duo_calibrate.model import LlamaTorch, attention_masks  # noqa: E402

MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
REFERENCE = ROOT / "tests" / "data" / "reference_llamacpp.json"
HAYSTACK = ROOT.parent / "shared" / "data" / "haystack" / "paul_graham_essays"
TOLERANCE = 0.6   # as kLogitTolerance / kTieMargin in reference_test.cc
RAW_TOLERANCE = 1.0
CASES = ["plain_short", "plain_code", "plain_numbers", "chat_short", "chat_system",
         "chat_multiturn", "chat_unicode", "plain_long"]


@pytest.fixture(scope="module")
def model():
    if not MODEL.exists():
        pytest.skip(f"{MODEL} is missing (tools/fetch_model.sh)")
    torch.set_num_threads(2)
    return LlamaTorch.from_gguf(str(MODEL))


@pytest.fixture(scope="module")
def reference():
    return {c["name"]: c for c in json.loads(REFERENCE.read_text())["cases"]}


def test_config(model):
    c = model.cfg
    assert (c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.d_model) == (30, 9, 3, 64, 576)
    assert c.rope_freq_base == 100000.0 and c.vocab_size == 49152
    assert model.w["output"] is model.w["token_embd"]  # tied embeddings


@pytest.mark.parametrize("name", CASES)
def test_matches_llamacpp(model, reference, name):
    c = reference[name]
    prompt, greedy, margins = c["prompt_ids"], c["greedy"], c["margins"]
    ids = torch.tensor(prompt + greedy[:-1])
    with torch.no_grad():
        logits = model.logits(model.forward(ids)[len(prompt) - 1:])   # one row per greedy step
    first = logits[0]
    ours_top = first[c["top_ids"]]
    ref_top = torch.tensor(c["top_logits"])
    # Relative to the top-1 logit (what softmax and greedy see) within the tolerance; the raw
    # values may also share a common offset (up to ~0.65 seen, on chat_short).
    rel = ((ours_top - ours_top[0]) - (ref_top - ref_top[0])).abs()
    assert float(rel.max()) <= TOLERANCE, f"{name}: top-10 relative logit differences {rel}"
    assert float((ours_top - ref_top).abs().max()) <= RAW_TOLERANCE, f"{name}: {ours_top - ref_top}"
    ours = logits.argmax(-1).tolist()
    bad = [(s, ours[s], greedy[s], margins[s]) for s in range(len(greedy))
           if ours[s] != greedy[s] and margins[s] >= TOLERANCE]
    assert not bad, f"{name}: (step, ours, llama.cpp, margin) {bad}"
    # Free-running greedy decoding equals llama.cpp's up to its first near-tie.
    n_same = next((s for s in range(len(greedy)) if margins[s] < TOLERANCE), len(greedy))
    assert ours[:n_same] == greedy[:n_same]


def test_streaming_mask_is_looms_rule():
    sink, recent, T = 3, 5, 20
    _, stream = attention_masks(T, sink, recent)
    for p in range(T):
        visible = set(range(min(sink, p + 1))) | set(range(max(sink, p + 1 - recent), p + 1))
        assert {j for j in range(T) if stream[p, j] == 0} == visible


def test_gates_one_is_full_attention_and_zero_streams(model):
    ids = torch.arange(100, 180)
    with torch.no_grad():
        full = model.forward(ids)
        ones = model.forward(ids, gates=torch.ones(30, 3), sink=4, recent=8)
        window = model.forward(ids, gates=torch.zeros(30, 3), sink=40, recent=40)
        zeros = model.forward(ids, gates=torch.zeros(30, 3), sink=4, recent=8)
    torch.testing.assert_close(ones, full, rtol=0, atol=1e-4)  # p_s + 1 * (p - p_s) = p, rounded
    torch.testing.assert_close(window, full)   # every position within sink + recent
    assert (zeros - full).abs().max() > 1e-2


def test_two_step_calibration_writes_loadable_gates(tmp_path):
    if not MODEL.exists() or not HAYSTACK.is_dir():
        pytest.skip("model or haystack missing")
    prefix = tmp_path / "duo" / "gates"
    rc = calibrate.main(["--model", str(MODEL), "--haystack-dir", str(HAYSTACK),
                         "--out-prefix", str(prefix), "--steps", "2", "--seq-len", "224",
                         "--min-seq-len", "192", "--samples", "1", "--num-passkeys", "2",
                         "--sink", "8", "--recent", "16", "--threads", "2"])
    assert rc == 0
    meta = json.loads((tmp_path / "duo" / "gates.json").read_text())
    assert meta["gates"] == "gates.tsv" and meta["sink"] == 64 and meta["recent"] == 256
    assert meta["calibration"]["steps"] == 2
    assert not (tmp_path / "duo" / "gates.partial.tsv").exists()
    gates = calibrate.read_tsv(str(tmp_path / "duo" / meta["gates"]))
    assert gates.shape == (30, 3)
    assert ((gates >= 0) & (gates <= 1)).all()
    assert (gates < 1).any()   # the L1 term moves them from 1 from the first step
