"""`loom serve --duo-pattern`: DuoAttention on the served model. The server logs the pattern, a
short greedy completion equals the plain server's, /metrics shows the retrieval and streaming KV
bytes, /v1/engine/stats the pattern in use and the same bytes, and long prompts are resumed from
the prefix cache with the streaming heads restored from snapshots."""
import subprocess

import httpx
import pytest

from conftest import LOOM_BIN, MODEL, ROOT, LoomServer

PATTERN = f"{ROOT}/config/duo_attention/SmolLM2-135M-Instruct.Q4_1.json"


def test_duo_server_matches_plain_within_the_window(server, client):
    s = LoomServer("--duo-pattern", PATTERN, "--duo-sparsity", "0.5")
    try:
        log = "".join(s.log)
        assert "DuoAttention" in log and "45 of 90 KV heads streaming" in log, log
        stats = s.stats()
        assert stats["duo_attention"] == {
            "enabled": True, "sparsity": 0.5, "sink": 64, "recent": 256,
            "streaming_kv_heads": 45, "total_kv_heads": 90, "prefix_caching": True,
            "prefix_snapshots": 0, "prefix_snapshot_capacity": 16,
            "prefix_snapshot_bytes": 0}, stats
        # 16 streaming caches (--max-num-seqs' default) of 45 heads x 320 positions x 64 x fp16
        # x (K, V); the blocks hold the retrieval heads in what is left of the 1 GiB budget
        # after those and 16 prefix snapshots of the same size.
        ring = 45 * 320 * 64 * 2 * 2
        assert stats["kv_streaming_capacity_bytes"] == 16 * ring
        assert 0 < stats["kv_retrieval_capacity_bytes"] <= (1 << 30) - 32 * ring
        assert stats["kv_streaming_bytes"] == 0  # no live sequence yet
        assert stats["kv_retrieval_bytes"] == 0
        req = dict(model=client.models.list().data[0].id, prompt="The capital of France is",
                   max_tokens=24, temperature=0)
        want = client.completions.create(**req).choices[0].text
        got = s.client().completions.create(**req).choices[0].text
        assert got == want
        metrics = httpx.get(s.url + "/metrics", timeout=10).text
        assert "loom_kv_cache_retrieval_bytes{" in metrics
        assert "loom_kv_cache_streaming_bytes{" in metrics
    finally:
        assert s.stop() == 0


def cached_tokens(completion):
    # The server leaves prompt_tokens_details out when nothing was cached.
    return completion["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0)


def test_duo_server_resumes_long_prompts_from_the_prefix_cache():
    """Past the streaming window a repeated prompt is served from the prefix cache (retrieval
    heads from the blocks, streaming heads from a snapshot) and gives the plain recompute's
    tokens; with --duo-prefix-snapshots 0 nothing is cached."""
    prompt = "Loom keeps the first and the last tokens for its streaming heads. " * 60
    req = dict(prompt=prompt, max_tokens=16, temperature=0)
    off = LoomServer("--duo-pattern", PATTERN, "--duo-sparsity", "0.5",
                     "--duo-prefix-snapshots", "0")
    try:
        assert "prefix caching off" in "".join(off.log)
        assert off.stats()["duo_attention"]["prefix_caching"] is False
        want = httpx.post(off.url + "/v1/completions", json=req, timeout=120).json()
        assert want["usage"]["prompt_tokens"] > 2 * 320
        again = httpx.post(off.url + "/v1/completions", json=req, timeout=120).json()
        assert cached_tokens(again) == 0
    finally:
        assert off.stop() == 0
    on = LoomServer("--duo-pattern", PATTERN, "--duo-sparsity", "0.5")
    try:
        assert "prefix caching with up to 16 streaming-cache snapshots" in "".join(on.log)
        texts, cached = [], []
        for _ in range(2):
            r = httpx.post(on.url + "/v1/completions", json=req, timeout=120).json()
            texts.append(r["choices"][0]["text"])
            cached.append(cached_tokens(r))
        assert texts == [want["choices"][0]["text"]] * 2
        n = want["usage"]["prompt_tokens"]
        assert cached == [0, (n - 1) // 16 * 16], cached
        duo = on.stats()["duo_attention"]
        assert 1 <= duo["prefix_snapshots"] <= 16
        assert duo["prefix_snapshot_bytes"] == duo["prefix_snapshots"] * 45 * 320 * 64 * 2 * 2
    finally:
        assert on.stop() == 0


def test_plain_server_reports_no_streaming_bytes(server):
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    line = [l for l in metrics.splitlines() if l.startswith("loom_kv_cache_streaming_bytes{")]
    assert line and line[0].endswith(" 0"), line
    stats = server.stats()
    assert stats["duo_attention"] == {
        "enabled": False, "sparsity": 0, "sink": 0, "recent": 0, "streaming_kv_heads": 0,
        "total_kv_heads": 90, "prefix_caching": True, "prefix_snapshots": 0,
        "prefix_snapshot_capacity": 0, "prefix_snapshot_bytes": 0}, stats
    assert stats["kv_streaming_capacity_bytes"] == 0 and stats["kv_streaming_bytes"] == 0
    # Every head in the blocks: 30 layers x 3 KV heads x 64 x fp16 x (K, V) per position.
    assert stats["kv_retrieval_capacity_bytes"] % (16 * 23040) == 0
    assert stats["kv_retrieval_capacity_bytes"] > 0


@pytest.mark.parametrize("flags, message", [
    (["--duo-pattern", PATTERN, "--duo-sparsity", "1.5"], "--duo-sparsity must be in [0, 1]"),
    (["--duo-pattern", f"{ROOT}/config/loom.json"], "\"gates\""),
    (["--duo-pattern", "/nonexistent/duo.json"], "cannot read"),
    (["--duo-pattern", PATTERN, "--duo-prefix-snapshots", "-1"],
     "--duo-prefix-snapshots must be >= 0"),
    (["--duo-pattern", PATTERN, "--kv-cache-mb", "64", "--duo-prefix-snapshots", "4000"],
     "prefix snapshots"),
])
def test_bad_duo_settings_are_clear_errors(flags, message):
    p = subprocess.run([LOOM_BIN, "serve", "--model", MODEL, "--port", "0", "--grpc-port", "-1",
                        *flags], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert message in p.stderr, p.stderr
