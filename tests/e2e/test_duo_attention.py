"""`loom serve --duo-pattern`: DuoAttention on the served model. The server logs the pattern, a
short greedy completion equals the plain server's, and /metrics shows the retrieval and streaming
KV bytes."""
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


def test_plain_server_reports_no_streaming_bytes(server):
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    line = [l for l in metrics.splitlines() if l.startswith("loom_kv_cache_streaming_bytes{")]
    assert line and line[0].endswith(" 0"), line


@pytest.mark.parametrize("flags, message", [
    (["--duo-pattern", PATTERN, "--duo-sparsity", "1.5"], "--duo-sparsity must be in [0, 1]"),
    (["--duo-pattern", f"{ROOT}/config/loom.json"], "\"gates\""),
    (["--duo-pattern", "/nonexistent/duo.json"], "cannot read"),
])
def test_bad_duo_settings_are_clear_errors(flags, message):
    p = subprocess.run([LOOM_BIN, "serve", "--model", MODEL, "--port", "0", "--grpc-port", "-1",
                        *flags], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert message in p.stderr, p.stderr
