"""LLM×MapReduce end to end, three ways, on the real model: POST /v1/pipelines/mapreduce (JSON and
a multipart upload; whole and as server-sent progress), loom.v1.Pipelines/MapReduce over gRPC, and
`loom mapreduce` (on its own engine, and fanned out to the server with --endpoint); plus the bad
inputs. The document is a short haystack with a pass key, so each run takes seconds; whether the
135M model's final answer holds the key is reported by bench/mapreduce, not asserted here.
"""
import glob
import json
import os
import re
import subprocess

import grpc
import httpx
import pytest

from conftest import LOOM_BIN, MODEL, ROOT, THREADS

ESSAYS = os.path.join(ROOT, "..", "shared", "data", "haystack", "paul_graham_essays")
KEY = "71432"
QUESTION = "What is the pass key?"
SETTINGS = {"task": "retrieval", "context_window": 1024, "max_tokens": 100}


def essay_words(n):
    """The first `n` words of the haystack essays in file order (fewer when they run out)."""
    words = []
    for path in sorted(glob.glob(os.path.join(ESSAYS, "*.txt"))):
        if len(words) >= n:
            break
        with open(path, encoding="utf-8", errors="replace") as f:
            words += f.read().split()
    return words[:n]


@pytest.fixture(scope="module")
def document():
    words = essay_words(900)
    if not words:
        pytest.skip(f"no haystack essays under {ESSAYS}")
    needle = f"The pass key is {KEY}. Remember it. {KEY} is the pass key."
    return " ".join(words[:450]) + "\n\n" + needle + "\n\n" + " ".join(words[450:])


def check_result(body, document):
    assert body["num_chunks"] >= 2
    assert len(body["chunks"]) == body["num_chunks"]
    assert all(0 <= c["confidence"] <= 5 for c in body["chunks"])
    assert body["answer"].strip()
    assert body["usage"]["prompt_tokens"] > len(document) // 8
    # The first map call runs alone, so the prefix cache serves the prompt head to the others.
    cached = body["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 0 < cached < body["usage"]["prompt_tokens"]


def test_http_streams_progress_then_the_answer(mr_server, document):
    events = []
    with httpx.stream("POST", mr_server.url + "/v1/pipelines/mapreduce", timeout=600,
                      json={"document": document, "question": QUESTION, "stream": True,
                            **SETTINGS}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    events = [json.loads(e) for e in events[:-1]]
    stages = [e["stage"] for e in events if e["type"] == "progress"]
    assert stages[0] == "split" and stages[-1] == "reduce"
    maps = [e for e in events if e.get("stage") == "map"]
    assert [e["done"] for e in maps] == list(range(1, events[0]["total"] + 1))
    assert all("chunk" in e for e in maps)
    result = events[-1]
    assert result["type"] == "result"
    check_result(result, document)
    found = [c["index"] for c in result["chunks"] if KEY in c["extracted_information"] + c["answer"]]
    print(f"map results holding the key: {found}; answer: {result['answer']!r}")


def test_http_upload_whole_answer(mr_server, document):
    r = httpx.post(mr_server.url + "/v1/pipelines/mapreduce", timeout=600,
                   files={"file": ("doc.txt", document.encode(), "text/plain")},
                   data={"question": QUESTION, **{k: str(v) for k, v in SETTINGS.items()}})
    assert r.status_code == 200, r.text
    check_result(r.json(), document)


def test_http_grounded_evidence(mr_server, document):
    """evidence=grounded: the reduce reads only the grounded map results when there are any, so
    the result's confidence (the best score the reduce read) is the best grounded score."""
    r = httpx.post(mr_server.url + "/v1/pipelines/mapreduce", timeout=600,
                   json={"document": document, "question": QUESTION, "evidence": "grounded",
                         **SETTINGS})
    assert r.status_code == 200, r.text
    body = r.json()
    check_result(body, document)
    grounded = [c["confidence"] for c in body["chunks"] if c["grounded"]]
    answered = [c["confidence"] for c in body["chunks"] if not c["no_information"]]
    print(f"grounded scores {grounded}, answered {answered}; answer {body['answer']!r}")
    assert body["confidence"] == (max(grounded) if grounded else max(answered, default=0))


def test_http_retrieval_copies_its_values(mr_server, document):
    """values (auto = sentence for retrieval): every map note's evidence is a sentence of the
    document or [NO INFORMATION], and every run of digits any call wrote is one the document
    holds; with values=free the model may write what it likes (not asserted)."""
    doc_digits = set(re.findall(r"\d+", document))
    flat = " ".join(document.split())
    for values in ("auto", "sentence"):
        r = httpx.post(mr_server.url + "/v1/pipelines/mapreduce", timeout=600,
                       json={"document": document, "question": QUESTION, "evidence": "grounded",
                             "values": values, **SETTINGS})
        assert r.status_code == 200, r.text
        body = r.json()
        check_result(body, document)
        for c in body["chunks"]:
            ev = c["extracted_information"]
            assert ev == "[NO INFORMATION]" or ev in flat, ev
            for field in (ev, c["rationale"], c["answer"]):
                assert set(re.findall(r"\d+", field)) <= doc_digits, field
        assert set(re.findall(r"\d+", body["answer"])) <= doc_digits, body["answer"]
        print(f"values={values}: answer {body['answer']!r}")
    r = httpx.post(mr_server.url + "/v1/pipelines/mapreduce", timeout=600,
                   json={"document": document, "question": QUESTION, "values": "free",
                         **SETTINGS})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("body,status,param", [
    ({"document": "   \n ", "question": QUESTION}, 400, None),
    ({"document": "abc\u0000def", "question": QUESTION}, 400, None),
    ({"document": "x" * 150000, "question": QUESTION}, 413, "document"),
    ({"document": "Some text.", "question": QUESTION, "task": "poetry"}, 400, None),
    ({"document": "Some text."}, 400, "question"),
    ({"document": "Some text.", "question": QUESTION, "context_window": "big"}, 400,
     "context_window"),
    ({"document": "Some text.", "question": QUESTION, "evidence": "best"}, 400, None),
    ({"document": "Some text.", "question": QUESTION, "values": "exact"}, 400, None),
    ({"document": "Some text.", "question": QUESTION, "max_collapse_rounds": "many"}, 400,
     "max_collapse_rounds"),
    ({"document": "Some text.", "question": QUESTION, "max_collapse_rounds": -1}, 400, None),
], ids=["blank", "binary", "too_large", "unknown_task", "no_question", "bad_number",
        "unknown_evidence", "unknown_values", "rounds_not_a_number", "negative_rounds"])
def test_http_bad_input(mr_server, body, status, param):
    r = httpx.post(mr_server.url + "/v1/pipelines/mapreduce", timeout=60, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"]
    if "max_collapse_rounds" in body:
        assert "max_collapse_rounds" in err["message"]
    if param:
        assert err["param"] == param


def test_http_collapse_bound_is_a_422(mr_server):
    """A summary of ~10K tokens in 1K-token calls leaves more notes than the reduce prompt holds;
    with no collapse rounds allowed that is the pipeline's 422, and with the default it is not."""
    words = essay_words(8000)
    if len(words) < 8000:
        pytest.skip(f"not enough haystack essays under {ESSAYS}")
    text = " ".join(words[:8000])
    body = {"document": text, "question": "What does the author say?", "task": "summary",
            "context_window": 1024, "max_tokens": 100}
    r = httpx.post(mr_server.url + "/v1/pipelines/mapreduce", timeout=600,
                   json={**body, "max_collapse_rounds": 0})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "collapse_failed"
    assert "after 0 collapse rounds" in err["message"]
    r = httpx.post(mr_server.url + "/v1/pipelines/mapreduce", timeout=600, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["collapse_rounds"] >= 1


def test_http_binary_upload_is_rejected(mr_server):
    r = httpx.post(mr_server.url + "/v1/pipelines/mapreduce", timeout=60,
                   files={"file": ("x.bin", bytes(range(256)) * 4, "application/octet-stream")},
                   data={"question": QUESTION})
    assert r.status_code == 400 and "binary" in r.json()["error"]["message"]
    r = httpx.post(mr_server.url + "/v1/pipelines/mapreduce", timeout=60,
                   files={"file": ("x.txt", b"caf\xe9 au lait", "text/plain")},
                   data={"question": QUESTION})
    assert r.status_code == 400 and "UTF-8" in r.json()["error"]["message"]


def test_grpc_streams_progress(mr_server, loom_pipelines_pb, document):
    pb, rpc = loom_pipelines_pb
    with grpc.insecure_channel(mr_server.grpc_target) as ch:
        stub = rpc.PipelinesStub(ch)
        events = list(stub.MapReduce(pb.MapReduceRequest(
            document=document, question=QUESTION, **SETTINGS), timeout=600))
        assert events[0].stage == "split" and events[-1].stage == "done"
        assert any(e.stage == "map" and e.chunk.answer for e in events)
        final = events[-1]
        assert final.num_chunks == len(final.chunks) >= 2 and final.answer
        assert 0 < final.cached_prompt_tokens < final.prompt_tokens
        with pytest.raises(grpc.RpcError) as e:
            list(stub.MapReduce(pb.MapReduceRequest(document="", question=QUESTION)))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as e:
            list(stub.MapReduce(pb.MapReduceRequest(document=document, question=QUESTION,
                                                    task="poetry")))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as e:
            list(stub.MapReduce(pb.MapReduceRequest(document=document, question=QUESTION,
                                                    evidence="best")))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "evidence" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            list(stub.MapReduce(pb.MapReduceRequest(document=document, question=QUESTION,
                                                    values="exact")))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "values" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            list(stub.MapReduce(pb.MapReduceRequest(document=document, question=QUESTION,
                                                    max_collapse_rounds=-1)))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "max_collapse_rounds" in e.value.details()


def test_cli_local_engine_and_endpoint(mr_server, document, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text(document)
    common = [LOOM_BIN, "mapreduce", "--doc", str(doc), "--question", QUESTION, "--task",
              "retrieval", "--context-window", "1024", "--max-tokens", "100", "--json"]
    local = subprocess.run(common + ["--model", MODEL, "--threads", THREADS], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr
    out = json.loads(local.stdout)
    assert out["num_chunks"] >= 2 and out["answer"]
    assert "map" in local.stderr and "split" in local.stderr  # the progress bar
    # The same pipeline with every call sent to the running server (OpenAI-compatible endpoint).
    remote = subprocess.run(common + ["--endpoint", mr_server.url + "/v1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout)["num_chunks"] == out["num_chunks"]
    # The local engine's prefix cache, and the server's as reported back through the endpoint.
    assert 0 < out["cached_prompt_tokens"] < out["prompt_tokens"]
    assert json.loads(remote.stdout)["cached_prompt_tokens"] > 0
    bad = subprocess.run([LOOM_BIN, "mapreduce", "--doc", str(doc)], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--question" in bad.stderr
    bad = subprocess.run(common[:6] + ["--max-collapse-rounds", "-1"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "max_collapse_rounds" in bad.stderr
