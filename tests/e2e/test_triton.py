"""The KServe v2 / Triton gRPC protocol through the unmodified `tritonclient[grpc]` from PyPI:
health and metadata, ModelInfer and ModelStreamInfer producing text, the TensorRT-LLM backend's
tensor names, and errors for bad requests.
"""
import queue

import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def triton(server):
    c = tc.InferenceServerClient(server.grpc_target)
    yield c
    c.close()


def inputs(prompt, max_tokens=12, temperature=0.0, stream=None, shape=(1, 1)):
    text = tc.InferInput("text_input", list(shape), "BYTES")
    text.set_data_from_numpy(np.array(prompt, dtype=object).reshape(shape))
    mt = tc.InferInput("max_tokens", [1, 1], "INT32")
    mt.set_data_from_numpy(np.array([[max_tokens]], dtype=np.int32))
    t = tc.InferInput("temperature", [1, 1], "FP32")
    t.set_data_from_numpy(np.array([[temperature]], dtype=np.float32))
    out = [text, mt, t]
    if stream is not None:
        s = tc.InferInput("stream", [1, 1], "BOOL")
        s.set_data_from_numpy(np.array([[stream]]))
        out.append(s)
    return out


def test_health_and_metadata(triton, server):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("default")
    assert not triton.is_model_ready("no-such-model")
    md = triton.get_model_metadata("default")
    assert md.platform == "loom"
    assert {"text_input", "max_tokens", "stream"} <= {i.name for i in md.inputs}
    assert [o.name for o in md.outputs] == ["text_output"]


def test_model_infer_matches_the_http_api(triton, server, client):
    r = triton.infer("default", inputs("The capital of France is"),
                     outputs=[tc.InferRequestedOutput("text_output")])
    out = r.as_numpy("text_output")
    assert out.shape == (1, 1)
    text = out[0, 0].decode()
    http = client.completions.create(model="default", prompt="The capital of France is",
                                     max_tokens=12, temperature=0)
    assert text == http.choices[0].text and text.strip()


def test_model_infer_batch(triton):
    prompts = ["One, two, three,", "Monday, Tuesday,"]
    r = triton.infer("default", inputs(prompts, shape=(2, 1)))
    out = r.as_numpy("text_output")
    assert out.shape == (2, 1)
    single = triton.infer("default", inputs(prompts[1])).as_numpy("text_output")[0, 0]
    assert out[1, 0] == single


def test_model_stream_infer_streams_tokens(triton):
    got = queue.Queue()
    triton.start_stream(callback=lambda result, error: got.put((result, error)))
    try:
        triton.async_stream_infer("default", inputs("The capital of France is", stream=True),
                                  request_id="s1")
        parts = []
        while True:
            result, error = got.get(timeout=60)
            assert error is None, error
            assert result.get_response().id == "s1"
            parts.append(result.as_numpy("text_output").ravel()[0].decode())
            params = result.get_response().parameters
            if "triton_final_response" in params and params["triton_final_response"].bool_param:
                break
        whole = triton.infer("default", inputs("The capital of France is"))
        assert len(parts) > 3
        assert "".join(parts) == whole.as_numpy("text_output")[0, 0].decode()

        # A bad request on the stream gets an error response; the stream stays usable.
        bad = tc.InferInput("max_tokens", [1], "INT32")
        bad.set_data_from_numpy(np.array([4], dtype=np.int32))
        triton.async_stream_infer("default", [bad], request_id="bad")
        result, error = got.get(timeout=30)
        assert error is not None and "text_input" in str(error)
        triton.async_stream_infer("default", inputs("Hello", max_tokens=2, stream=False),
                                  request_id="after")
        result, error = got.get(timeout=60)
        assert error is None and result.get_response().id == "after"
    finally:
        triton.stop_stream()


def test_errors(triton):
    with pytest.raises(InferenceServerException) as e:
        triton.infer("gpt-4o", inputs("Hi"))
    assert "does not exist" in str(e.value)
    with pytest.raises(InferenceServerException) as e:
        triton.infer("default", inputs("Hi", temperature=9.0))
    assert "temperature" in str(e.value)
    with pytest.raises(InferenceServerException) as e:
        triton.infer("default", inputs("Hi"), outputs=[tc.InferRequestedOutput("logits")])
    assert "text_output" in str(e.value)
