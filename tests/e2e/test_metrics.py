"""GET /metrics on the real server: vLLM's metric names under `loom_`, values that follow real
requests (success by finish reason, tokens, prefix-cache hits, latency histograms), running requests
back to 0 after a client disconnects mid-stream, and a scrape that `promtool check metrics` accepts.
"""
import re
import subprocess
import time

import httpx


def scrape(server):
    r = httpx.get(server.url + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def value(text, name, **labels):
    """The sample `name{labels...}` (label order free); None when absent."""
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


def test_metrics_follow_requests_and_pass_promtool(server):
    before = scrape(server)
    r = httpx.post(server.url + "/v1/completions", timeout=60,
                   json={"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0,
                         "ignore_eos": True})
    assert r.status_code == 200
    after = scrape(server)
    for name in ["loom_num_requests_running", "loom_num_requests_waiting",
                 "loom_kv_cache_usage_perc", "loom_prompt_tokens_total",
                 "loom_generation_tokens_total", "loom_prefix_cache_queries_total",
                 "loom_prefix_cache_hits_total", "loom_time_to_first_token_seconds_count",
                 "loom_inter_token_latency_seconds_count", "loom_e2e_request_latency_seconds_count",
                 "loom_request_queue_time_seconds_count"]:
        assert value(after, name) is not None, name
    grew = lambda n, **l: value(after, n, **l) - (value(before, n, **l) or 0)
    assert grew("loom_request_success_total", finished_reason="length") == 1
    assert grew("loom_generation_tokens_total") == 4
    assert grew("loom_prompt_tokens_total") >= 5
    assert grew("loom_inter_token_latency_seconds_count") == 3
    assert grew("loom_e2e_request_latency_seconds_count") == 1
    check = subprocess.run(["promtool", "check", "metrics"], input=after, text=True,
                           capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_prefix_cache_hits_are_counted(server):
    prompt = "Loom caches prompt prefixes in blocks of sixteen tokens. " * 6
    before = value(scrape(server), "loom_prefix_cache_hits_total")
    for _ in range(2):
        r = httpx.post(server.url + "/v1/completions", timeout=60,
                       json={"prompt": prompt, "max_tokens": 2, "temperature": 0})
        assert r.status_code == 200
    assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] >= 16
    assert value(scrape(server), "loom_prefix_cache_hits_total") - before >= 16


def test_running_returns_to_zero_after_a_disconnect_mid_stream(server):
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                      json={"prompt": "Once upon a time", "max_tokens": 256, "stream": True,
                            "ignore_eos": True}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # held: a dropped generator would close the response
        got = 0
        for line in lines:
            if line.startswith("data: "):
                got += 1
                if got == 3:
                    break
        text = scrape(server)
        assert value(text, "loom_num_requests_running") == 1, text
    deadline = time.time() + 10
    while time.time() < deadline and value(scrape(server), "loom_num_requests_running") != 0:
        time.sleep(0.02)
    assert value(scrape(server), "loom_num_requests_running") == 0
