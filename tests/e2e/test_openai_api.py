"""`loom serve` end to end with the official openai SDK (pinned in requirements.txt): chat and
completions, streaming with usage, stop strings, seeds, n, logprobs, every error case, client
disconnects, batch invariance under concurrency and a SIGTERM drain.

  LOOM_BIN=build/server/loom .venv/bin/python -m pytest -q tests/e2e
"""
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from conftest import LoomServer

SYSTEM = "You are a terse assistant. Answer in one word."
COLOUR = [{"role": "system", "content": SYSTEM},
          {"role": "user", "content": "Name a primary colour."}]


def chat(client, **kw):
    kw.setdefault("model", "default")
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(**kw)


def complete(client, **kw):
    kw.setdefault("model", "default")
    kw.setdefault("temperature", 0)
    return client.completions.create(**kw)


def error_of(response):
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


# ---- basic routes ---------------------------------------------------------------------------

def test_health_routes(server):
    for path in ("/health", "/v2/health/live", "/v2/health/ready"):
        assert httpx.get(server.url + path).status_code == 200, path


def test_models_lists_the_served_model(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["SmolLM2-135M-Instruct.Q4_1"]
    assert models[0].object == "model"


def test_model_aliases_are_accepted(client):
    for name in ("SmolLM2-135M-Instruct.Q4_1", "Smollm2 135M 8k Lc100K Mix1 Ep2", "default"):
        r = complete(client, model=name, prompt="Hi", max_tokens=1)
        assert r.model == "SmolLM2-135M-Instruct.Q4_1"


def test_tokenize_and_detokenize(server):
    r = httpx.post(server.url + "/tokenize", json={"model": "default", "prompt": "Hello world"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["tokens"]) > 0
    assert body["max_model_len"] == 512
    r = httpx.post(server.url + "/detokenize", json={"tokens": body["tokens"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"prompt": "Hello world"}
    # Chat messages are rendered with the template first: the same 31 tokens as the CLI test.
    r = httpx.post(server.url + "/tokenize", json={"messages": COLOUR})
    assert r.json()["count"] == 31


# ---- chat and completions -------------------------------------------------------------------

def test_chat_completion(client):
    r = chat(client, messages=COLOUR, max_tokens=16)
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    assert r.model == "SmolLM2-135M-Instruct.Q4_1"
    assert abs(r.created - time.time()) < 600
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.index == 0 and c.message.role == "assistant"
    # The same as `loom generate --chat` on this prompt (tests/server/cli_test.py).
    assert c.message.content == "The primary colour is red."
    assert c.finish_reason == "stop"
    assert c.logprobs is None
    assert r.usage.prompt_tokens == 31
    assert r.usage.completion_tokens == 6
    assert r.usage.total_tokens == 37


def test_chat_content_parts_equal_a_string(client):
    parts = [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
             {"role": "user", "content": [{"type": "text", "text": "Name a primary colour."}]}]
    assert (chat(client, messages=parts, max_tokens=16).choices[0].message.content ==
            "The primary colour is red.")


def test_completion(client):
    r = complete(client, prompt="The capital of France is", max_tokens=8)
    assert r.id.startswith("cmpl-")
    assert r.object == "text_completion"
    assert r.choices[0].text.startswith(" Paris.")
    assert r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (5, 8, 13)


def test_completion_max_completion_tokens_and_token_prompt(server, client):
    ids = httpx.post(server.url + "/tokenize",
                     json={"prompt": "The capital of France is"}).json()["tokens"]
    a = complete(client, prompt="The capital of France is", max_tokens=4)
    b = complete(client, prompt=ids, max_tokens=4)
    assert a.choices[0].text == b.choices[0].text
    r = chat(client, messages=COLOUR, extra_body={"max_completion_tokens": 2})
    assert r.usage.completion_tokens == 2 and r.choices[0].finish_reason == "length"


def test_completion_list_of_prompts(server, client):
    r = complete(client, prompt=["The capital of France is", "1, 2, 3,"], max_tokens=4)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].text == complete(client, prompt="The capital of France is",
                                         max_tokens=4).choices[0].text
    assert r.choices[1].text == complete(client, prompt="1, 2, 3,", max_tokens=4).choices[0].text
    assert r.usage.prompt_tokens == 5 + httpx.post(server.url + "/tokenize",
                                                   json={"prompt": "1, 2, 3,"}).json()["count"]


def test_chat_streaming_with_usage(client):
    whole = chat(client, messages=COLOUR, max_tokens=16)
    chunks = list(chat(client, messages=COLOUR, max_tokens=16, stream=True,
                       stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop" and all(f is None for f in finish[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == 31
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_streaming_matches_whole(client):
    whole = complete(client, prompt="Once upon a time", max_tokens=12)
    chunks = list(complete(client, prompt="Once upon a time", max_tokens=12, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)  # no include_usage: no usage chunk


def test_stream_wire_format(server):
    """Raw SSE: `data: {json}\\n\\n` events ending with `data: [DONE]\\n\\n`."""
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                      json={"prompt": "Hello", "max_tokens": 3, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for e in events[:-2]:
        assert e.startswith("data: ")
        json.loads(e[len("data: "):])


def test_stop_strings(client):
    r = complete(client, prompt="The capital of France is", max_tokens=16, stop=".")
    assert r.choices[0].text == " Paris" and r.choices[0].finish_reason == "stop"
    r = complete(client, prompt="The capital of France is", max_tokens=16, stop=["xyz", "is"])
    assert "is" not in r.choices[0].text
    chunks = list(complete(client, prompt="The capital of France is", max_tokens=16, stop=["."],
                           stream=True))
    assert "".join(c.choices[0].text for c in chunks) == " Paris"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_seed_determinism(client):
    kw = dict(prompt="Once upon a time", max_tokens=16, temperature=1.0,
              extra_body={"ignore_eos": True})
    a = complete(client, seed=7, **kw).choices[0].text
    b = complete(client, seed=7, **kw).choices[0].text
    c = complete(client, seed=8, **kw).choices[0].text
    assert a == b
    assert a != c


def test_n_2_uses_seed_plus_index(client):
    kw = dict(messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=12,
              temperature=1.0)
    r = chat(client, n=2, seed=100, **kw)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage.completion_tokens <= 24
    assert r.choices[0].message.content == chat(client, seed=100, **kw).choices[0].message.content
    assert r.choices[1].message.content == chat(client, seed=101, **kw).choices[0].message.content
    assert r.usage.prompt_tokens == chat(client, seed=100, **kw).usage.prompt_tokens
    # Streaming with n=2: every choice gets its role chunk and its finish_reason.
    chunks = list(chat(client, n=2, seed=100, stream=True, **kw))
    texts = {0: "", 1: ""}
    finished = set()
    for c in chunks:
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finished.add(ch.index)
    assert finished == {0, 1}
    assert texts == {0: r.choices[0].message.content, 1: r.choices[1].message.content}


def test_chat_logprobs(client):
    r = chat(client, messages=COLOUR, max_tokens=16, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3
        assert t.logprob <= 0
        assert bytes(t.bytes).decode() == t.token
        # Greedy: the chosen token is the most likely one.
        assert t.top_logprobs[0].token == t.token
        assert t.top_logprobs[0].logprob == pytest.approx(t.logprob)
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob
    # logprobs without top_logprobs: the chosen token only.
    r = chat(client, messages=COLOUR, max_tokens=4, logprobs=True)
    assert all(t.top_logprobs == [] for t in r.choices[0].logprobs.content)
    # Streamed logprobs arrive with their tokens.
    chunks = list(chat(client, messages=COLOUR, max_tokens=16, logprobs=True, top_logprobs=2,
                       stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs
                for t in c.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in content]


def test_completion_logprobs(client):
    r = complete(client, prompt="The capital of France is", max_tokens=5, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset[0] == 0
    assert all(len(t) <= 2 and max(t.values()) <= 0 for t in lp.top_logprobs)
    assert lp.tokens[0] == " Paris"


# ---- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("body,param", [
    ({"messages": COLOUR, "temperature": "hot"}, "temperature"),
    ({"messages": COLOUR, "temperature": 3}, "temperature"),
    ({"messages": COLOUR, "top_p": 0}, "top_p"),
    ({"messages": COLOUR, "n": 0}, "n"),
    ({"messages": COLOUR, "max_tokens": "ten"}, "max_tokens"),
    ({"messages": COLOUR, "max_tokens": 0}, "max_tokens"),
    ({"messages": COLOUR, "max_tokens": 1000}, "max_tokens"),  # over --max-tokens-cap 256
    ({"messages": COLOUR, "stop": 5}, "stop"),
    ({"messages": COLOUR, "seed": "x"}, "seed"),
    ({"messages": COLOUR, "presence_penalty": -3}, "presence_penalty"),
    ({"messages": COLOUR, "stream": "yes"}, "stream"),
    ({"messages": COLOUR, "top_logprobs": 3}, "top_logprobs"),  # without logprobs
    ({"messages": COLOUR, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages.content"),
])
def test_chat_bad_request(server, body, param):
    r = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param, err


@pytest.mark.parametrize("body,param", [
    ({"prompt": 5}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [1.5, 2]}, "prompt"),
    ({"prompt": "x", "logprobs": True}, "logprobs"),
    ({"prompt": "x", "logprobs": 50}, "logprobs"),
    ({"prompt": [999999999]}, "prompt"),
])
def test_completion_bad_request(server, body, param):
    r = httpx.post(server.url + "/v1/completions", json=body)
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == param


def test_bad_json(server):
    for path in ("/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"):
        r = httpx.post(server.url + path, content=b'{"messages": [',
                       headers={"content-type": "application/json"})
        assert r.status_code == 400, path
        err = error_of(r)
        assert err["type"] == "invalid_request_error" and err["code"] == "invalid_json"


def test_wrong_type_through_the_sdk(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, messages=COLOUR, temperature="hot")
    assert e.value.status_code == 400
    assert e.value.body["param"] == "temperature"


def test_unknown_model(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, model="gpt-4o", messages=COLOUR)
    assert e.value.body["code"] == "model_not_found"
    assert e.value.body["param"] == "model"


def test_prompt_too_long(client):
    long_prompt = "hello " * 450  # > --max-prompt-tokens 400
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, prompt=long_prompt, max_tokens=4)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, messages=[{"role": "user", "content": long_prompt}], max_tokens=4)
    assert e.value.body["code"] == "context_length_exceeded"
    # Within --max-prompt-tokens, but prompt + max_tokens is over the 512-token context.
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, prompt="hello " * 300, max_tokens=256)
    assert e.value.body["code"] == "context_length_exceeded"


def test_body_too_large(server):
    r = httpx.post(server.url + "/v1/completions",
                   json={"prompt": "x" * 300_000, "max_tokens": 1})  # > --max-body-bytes
    assert r.status_code == 413
    assert error_of(r)["code"] == "request_too_large"


def test_unknown_route_and_wrong_method(server):
    r = httpx.get(server.url + "/v1/nothing")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    r = httpx.get(server.url + "/v1/chat/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = httpx.post(server.url + "/health")
    assert r.status_code == 405


def test_api_key(keyed_server):
    with pytest.raises(openai.AuthenticationError):
        keyed_server.client(api_key="wrong").completions.create(model="default", prompt="Hi",
                                                                 max_tokens=1)
    r = httpx.post(keyed_server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 1})
    assert r.status_code == 401 and error_of(r)["code"] == "invalid_api_key"
    for path, body in (("/tokenize", {"prompt": "Hi"}), ("/detokenize", {"tokens": [1]})):
        assert httpx.post(keyed_server.url + path, json=body).status_code == 401
    assert httpx.get(keyed_server.url + "/v1/models").status_code == 401
    # Health stays open; the right key works.
    assert httpx.get(keyed_server.url + "/health").status_code == 200
    ok = keyed_server.client(api_key="sekrit").completions.create(model="default", prompt="Hi",
                                                                   max_tokens=1, temperature=0)
    assert ok.usage.completion_tokens == 1


def test_too_many_concurrent_requests(keyed_server):
    """--max-concurrent-requests 1: a second request while one streams gets 429."""
    client = keyed_server.client(api_key="sekrit")
    stream = client.completions.create(model="default", prompt="Once upon a time",
                                       max_tokens=200, stream=True,
                                       extra_body={"ignore_eos": True})
    next(iter(stream))
    with pytest.raises(openai.RateLimitError) as e:
        client.completions.create(model="default", prompt="Hi", max_tokens=1)
    assert e.value.status_code == 429
    stream.close()
    # The slot is released once the stream is gone.
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            client.completions.create(model="default", prompt="Hi", max_tokens=1)
            break
        except openai.RateLimitError:
            time.sleep(0.1)
    else:
        pytest.fail("the concurrency slot was never released")


def test_engine_queue_full_and_request_timeout():
    """A full admission queue gives 429; a request over --request-timeout-s ends with 408."""
    s = LoomServer("--max-num-seqs", "1", "--max-waiting", "1", "--max-batched-tokens", "16",
                   "--request-timeout-s", "3", "--max-model-len", "512")
    try:
        client = s.client()
        a = client.completions.create(model="default", prompt="Once upon a time", max_tokens=480,
                                      stream=True, extra_body={"ignore_eos": True})
        a_iter = iter(a)
        next(a_iter)  # A runs
        waiting = {}

        def run_b():
            try:
                client.completions.create(model="default", prompt="Hi", max_tokens=4)
                waiting["b"] = "ok"
            except openai.APIStatusError as e:
                waiting["b"] = e.status_code

        b = threading.Thread(target=run_b)
        b.start()
        deadline = time.time() + 10
        while s.stats()["num_waiting"] == 0 and time.time() < deadline:
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError) as e:  # C: the queue (1) is full
            client.completions.create(model="default", prompt="Hi", max_tokens=1)
        assert e.value.body["type"] == "rate_limit_exceeded"
        # A passes its deadline mid-stream: the SDK raises on the error event.
        with pytest.raises(openai.APIError) as e:
            for _ in a_iter:
                pass
        assert "timed out" in str(e.value)
        b.join(30)
        assert waiting["b"] in ("ok", 408)
        with pytest.raises(openai.APIStatusError) as e:  # whole response: 408
            client.completions.create(model="default", prompt="Once upon a time",
                                      max_tokens=480, extra_body={"ignore_eos": True})
        assert e.value.status_code == 408
        assert e.value.body["code"] == "request_timeout"
    finally:
        assert s.stop() == 0, "".join(s.log)


# ---- disconnects ----------------------------------------------------------------------------

def wait_idle(server, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = server.stats()
        if s["num_running"] == 0 and s["num_waiting"] == 0:
            return s
        time.sleep(0.02)
    pytest.fail(f"the engine still has requests: {server.stats()}")


def test_disconnect_mid_stream_frees_the_sequence(server):
    before = wait_idle(server)
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                      json={"prompt": "Once upon a time", "max_tokens": 256, "stream": True,
                            "ignore_eos": True}) as r:
        lines = r.iter_lines()
        got = 0
        for line in lines:
            if line.startswith("data: "):
                got += 1
                if got == 3:
                    break
        assert server.stats()["num_running"] == 1
    after = wait_idle(server)
    # Stopped long before its 256 tokens.
    assert after["generation_tokens_total"] - before["generation_tokens_total"] < 128


def test_disconnect_while_waiting_for_a_whole_response(server):
    before = wait_idle(server)
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 256, "ignore_eos": True})
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  f"\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode())
    deadline = time.time() + 10
    while server.stats()["num_running"] == 0 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    sock.close()
    after = wait_idle(server)
    assert after["generation_tokens_total"] - before["generation_tokens_total"] < 128


# ---- batching -------------------------------------------------------------------------------

def test_batch_invariance_16_concurrent_greedy_requests(server, client):
    prompts = [f"Write one sentence about the number {i}." for i in range(16)]

    def run(p):
        r = chat(client, messages=[{"role": "user", "content": p}], max_tokens=24)
        return r.choices[0].message.content

    one_at_a_time = [run(p) for p in prompts]
    before = server.stats()
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(run, prompts))
    after = server.stats()
    assert concurrent == one_at_a_time
    # They really were batched: far fewer engine steps than generated tokens.
    tokens = after["generation_tokens_total"] - before["generation_tokens_total"]
    assert after["steps"] - before["steps"] < tokens / 2, (before, after)


# ---- shutdown -------------------------------------------------------------------------------

def test_sigterm_drains_in_flight_requests_and_exits_0():
    s = LoomServer("--drain-timeout-s", "30", "--max-model-len", "512")
    try:
        client = s.client()
        result = {}

        def run():
            chunks = list(client.completions.create(model="default", prompt="Once upon a time",
                                                    max_tokens=48, temperature=0, stream=True,
                                                    extra_body={"ignore_eos": True}))
            result["text"] = "".join(c.choices[0].text for c in chunks)
            result["finish"] = chunks[-1].choices[0].finish_reason

        t = threading.Thread(target=run)
        t.start()
        while s.stats()["num_running"] == 0:
            time.sleep(0.01)
        code = s.stop()
        t.join(30)
        assert code == 0, "".join(s.log)
        assert result.get("finish") == "length", result  # finished, not cut off
        with pytest.raises(httpx.ConnectError):
            httpx.get(s.url + "/health")
    finally:
        s.kill()
