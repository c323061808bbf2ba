"""The gRPC front end of the real `loom serve` on the real model, through Python grpcio: loom.v1
streaming chat gives the HTTP API's tokens, cancellation and deadlines free the sequence, bad
arguments, keys and limits map to the right status codes, grpc.health.v1 goes NOT_SERVING ->
SERVING on start, and server reflection lists the services.
"""
import os
import re
import subprocess
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import LOOM_BIN, LOOM_GRPC_LISTENING, MODEL, ROOT, THREADS
from test_metrics import scrape, value

QUESTION = "Name three colours of the rainbow."


@pytest.fixture(scope="module")
def stub(server, loom_pb):
    pb, rpc = loom_pb
    channel = grpc.insecure_channel(server.grpc_target)
    yield rpc.GenerationStub(channel)
    channel.close()


def chat_request(pb, content=QUESTION, **params):
    sampling = params.pop("sampling", {"temperature": 0})
    return pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=content)],
                          params=pb.GenerationParams(sampling=pb.SamplingParams(**sampling),
                                                     **params))


def code_of(call):
    with pytest.raises(grpc.RpcError) as e:
        r = call()
        if hasattr(r, "__iter__"):
            list(r)
    return e.value.code(), e.value.details()


def running(server):
    return value(scrape(server), "loom_num_requests_running")


def wait_idle(server, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline and running(server) != 0:
        time.sleep(0.02)
    return running(server)


def test_streaming_chat_matches_the_http_api(server, client, stub, loom_pb):
    pb, _ = loom_pb
    msgs = list(stub.Chat(chat_request(pb, max_tokens=24, logprobs=2)))
    tokens = [t for m in msgs for t in m.token_ids]
    text = "".join(m.text for m in msgs)
    finals = [m for m in msgs if m.finish_reason]
    assert len(finals) == 1 and finals[0].finish_reason in ("stop", "length")
    assert msgs[-1].usage.completion_tokens == len(tokens) or finals[0].finish_reason == "stop"
    assert all(len(m.logprobs) == len(m.token_ids) for m in msgs)
    assert all(len(lp.top) == 2 for m in msgs for lp in m.logprobs)
    assert len({m.id for m in msgs}) == 1

    http = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": QUESTION}], max_tokens=24,
        temperature=0, logprobs=True, top_logprobs=2)
    choice = http.choices[0]
    assert text == choice.message.content
    assert finals[0].finish_reason == choice.finish_reason
    assert msgs[-1].usage.prompt_tokens == http.usage.prompt_tokens
    assert msgs[-1].usage.completion_tokens == http.usage.completion_tokens
    # The same token sequence: each streamed token's text equals HTTP's per-token logprob entry.
    http_tokens = [c.token for c in choice.logprobs.content]
    grpc_tokens = [lp.chosen.text for m in msgs for lp in m.logprobs]
    assert grpc_tokens == http_tokens
    detok = stub.Detokenize(pb.DetokenizeRequest(tokens=[t for t in tokens]))
    assert detok.text.startswith(text)


def test_complete_tokenize_and_models(stub, loom_pb):
    pb, _ = loom_pb
    ids = stub.Tokenize(pb.TokenizeRequest(text="Hello world")).tokens
    assert len(ids) >= 2
    by_text = list(stub.Complete(pb.CompleteRequest(
        text="Hello world", params=pb.GenerationParams(max_tokens=8,
                                                       sampling=pb.SamplingParams(temperature=0)))))
    by_ids = list(stub.Complete(pb.CompleteRequest(
        tokens=pb.TokenIds(ids=ids),
        params=pb.GenerationParams(max_tokens=8, sampling=pb.SamplingParams(temperature=0)))))
    assert [t for m in by_text for t in m.token_ids] == [t for m in by_ids for t in m.token_ids]
    models = stub.ListModels(pb.ListModelsRequest()).models
    assert len(models) == 1 and models[0].max_model_len == 512


def test_n_choices_and_seeds(stub, loom_pb):
    pb, _ = loom_pb
    req = chat_request(pb, max_tokens=12, n=3, sampling={"temperature": 1.0, "seed": 7})
    first = list(stub.Chat(req))
    again = list(stub.Chat(req))
    texts = lambda msgs: ["".join(m.text for m in msgs if m.index == i) for i in range(3)]
    assert texts(first) == texts(again)
    assert sorted({m.index for m in first if m.token_ids}) == [0, 1, 2]


def test_cancel_mid_stream_frees_the_sequence(server, stub, loom_pb):
    pb, _ = loom_pb
    before = scrape(server)
    cancelled_before = value(before, "loom_request_success_total", finished_reason="cancelled") or 0
    call = stub.Complete(pb.CompleteRequest(
        text="Once upon a time", params=pb.GenerationParams(max_tokens=200, ignore_eos=True)))
    got = 0
    for m in call:
        got += len(m.token_ids)
        if got >= 3:
            break
    assert running(server) == 1
    call.cancel()
    assert wait_idle(server) == 0
    after = scrape(server)
    assert value(after, "loom_request_success_total", finished_reason="cancelled") \
        == cancelled_before + 1
    assert value(after, "loom_generation_tokens_total") is not None
    assert (value(after, "loom_grpc_requests_total", method="/loom.v1.Generation/Complete",
                  code="CANCELLED") or 0) >= 1


def test_deadline_exceeded(server, stub, loom_pb):
    pb, _ = loom_pb
    req = pb.CompleteRequest(text="Once upon a time",
                             params=pb.GenerationParams(max_tokens=256, ignore_eos=True))
    t0 = time.time()
    code, _ = code_of(lambda: stub.Complete(req, timeout=0.5))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.time() - t0 < 5
    assert wait_idle(server) == 0


@pytest.mark.parametrize("params,content,want,field", [
    ({"sampling": {"temperature": 5}}, QUESTION, grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
    ({"max_tokens": 0}, QUESTION, grpc.StatusCode.INVALID_ARGUMENT, "max_tokens"),
    ({"max_tokens": 100000}, QUESTION, grpc.StatusCode.INVALID_ARGUMENT, "max_tokens"),
    ({"n": 99}, QUESTION, grpc.StatusCode.INVALID_ARGUMENT, "n"),
    ({"logprobs": 50}, QUESTION, grpc.StatusCode.INVALID_ARGUMENT, "logprobs"),
    ({"model": "gpt-4o"}, QUESTION, grpc.StatusCode.NOT_FOUND, "gpt-4o"),
    ({}, "word " * 600, grpc.StatusCode.INVALID_ARGUMENT, "at most 400"),
], ids=["temperature", "max_tokens0", "max_tokens_cap", "n", "logprobs", "model", "long_prompt"])
def test_bad_arguments(stub, loom_pb, params, content, want, field):
    pb, _ = loom_pb
    params = dict(params)
    sampling = params.pop("sampling", {"temperature": 0})
    code, details = code_of(lambda: stub.Chat(chat_request(pb, content, sampling=sampling,
                                                           **params)))
    assert code == want
    assert field in details


def test_bad_prompts(stub, loom_pb):
    pb, _ = loom_pb
    code, details = code_of(lambda: stub.Complete(pb.CompleteRequest(
        tokens=pb.TokenIds(ids=[1, 10**8]), params=pb.GenerationParams(max_tokens=2))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "out of range" in details
    code, _ = code_of(lambda: stub.Complete(pb.CompleteRequest(params=pb.GenerationParams())))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = code_of(lambda: stub.Chat(pb.ChatRequest(
        messages=[pb.ChatMessage(role="wizard", content="hi")])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_api_key_and_concurrency_limit(keyed_server, loom_pb):
    pb, rpc = loom_pb
    with grpc.insecure_channel(keyed_server.grpc_target) as ch:
        stub = rpc.GenerationStub(ch)
        req = chat_request(pb, max_tokens=2)
        code, details = code_of(lambda: stub.Chat(req))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "API key" in details
        code, _ = code_of(lambda: stub.Chat(req, metadata=[("authorization", "Bearer wrong")]))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code, _ = code_of(lambda: stub.ListModels(pb.ListModelsRequest()))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        good = [("authorization", "Bearer sekrit")]
        assert "".join(m.text for m in stub.Chat(req, metadata=good))
        # One request at a time (--max-concurrent-requests 1), shared with HTTP.
        held = stub.Complete(pb.CompleteRequest(
            text="Once upon a time", params=pb.GenerationParams(max_tokens=200, ignore_eos=True)),
            metadata=good)
        next(held)
        code, _ = code_of(lambda: stub.Chat(req, metadata=good))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        r = httpx.post(keyed_server.url + "/v1/completions", timeout=10,
                       headers={"Authorization": "Bearer sekrit"},
                       json={"prompt": "Hi", "max_tokens": 2})
        assert r.status_code == 429
        held.cancel()


def test_health_goes_from_not_serving_to_serving_and_reflection():
    proc = subprocess.Popen(
        [LOOM_BIN, "serve", "--model", MODEL, "--port", "0", "--grpc-port", "0", "--threads",
         THREADS, "--max-model-len", "512", "--load-delay-ms", "1500"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        target = None
        for line in proc.stderr:
            m = re.search(LOOM_GRPC_LISTENING, line)
            if m:
                target = f"127.0.0.1:{m.group(1)}"
                break
        assert target, "no gRPC port printed"
        with grpc.insecure_channel(target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            S = health_pb2.HealthCheckResponse
            assert health.Check(health_pb2.HealthCheckRequest()).status == S.NOT_SERVING
            seen = []
            for r in health.Watch(health_pb2.HealthCheckRequest(service="loom.v1.Generation"),
                                  timeout=60):
                seen.append(r.status)
                if r.status == S.SERVING:
                    break
            assert seen[0] == S.NOT_SERVING and seen[-1] == S.SERVING
            assert health.Check(health_pb2.HealthCheckRequest(
                service="inference.GRPCInferenceService")).status == S.SERVING

            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            reqs = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            names = {s.name for r in refl.ServerReflectionInfo(reqs)
                     for s in r.list_services_response.service}
            assert {"loom.v1.Generation", "inference.GRPCInferenceService",
                    "grpc.health.v1.Health"} <= names
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
