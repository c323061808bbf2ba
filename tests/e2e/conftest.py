"""Fixtures for the end-to-end tests: the real `loom serve` binary on the real model, on a free port.

LOOM_BIN names the binary (CMake passes $<TARGET_FILE:loom>); the default is build/server/loom.
"""
import os
import sys

import httpx
import openai
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from loom_grpc import load_stubs  # noqa: E402
from server_process import LOOM_GRPC_LISTENING, LOOM_LISTENING, ServerProcess  # noqa: E402
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
LOOM_BIN = os.environ.get("LOOM_BIN", os.path.join(ROOT, "build", "server", "loom"))
# One engine thread: the suite shares two cores with whatever else runs, and spinning compute
# workers slow down badly when they do not get a core of their own. LOOM_E2E_THREADS overrides.
THREADS = os.environ.get("LOOM_E2E_THREADS", "1")

# Small limits so the error cases are cheap to reach; the suite keeps max_tokens small too.
MAIN_FLAGS = ["--max-model-len", "512", "--max-prompt-tokens", "400", "--max-tokens-cap", "256",
              "--max-body-bytes", "262144", "--request-timeout-s", "120", "--drain-timeout-s", "10"]


class LoomServer(ServerProcess):
    """One `loom serve` process; port 0 lets the server pick, and it prints the port it got."""

    def __init__(self, *flags):
        super().__init__(
            [LOOM_BIN, "serve", "--model", MODEL, "--port", "0", "--grpc-port", "0", "--threads", THREADS, *flags],
            "loom serve", port_re=LOOM_LISTENING, cwd=ROOT, health_timeout=60)

    @property
    def grpc_target(self):
        return ServerProcess.grpc_target(self)

    def client(self, api_key="unused", **kw):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0,
                             timeout=120, **kw)

    def stats(self, headers=None):
        r = httpx.get(self.url + "/v1/engine/stats", headers=headers, timeout=10)
        r.raise_for_status()
        return r.json()


def pytest_collection_modifyitems(config, items):
    missing = [p for p in (MODEL, LOOM_BIN) if not os.path.exists(p)]
    if missing:
        skip = pytest.mark.skip(reason=f"missing {', '.join(missing)} (run make build model)")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def server():
    s = LoomServer(*MAIN_FLAGS)
    yield s
    code = s.stop()
    assert code == 0, "".join(s.log)


@pytest.fixture(scope="session")
def client(server):
    return server.client()


@pytest.fixture(scope="session")
def keyed_server():
    """A second instance with an API key and room for one request at a time."""
    s = LoomServer("--api-key", "sekrit", "--max-concurrent-requests", "1", "--max-model-len",
                   "512")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def loom_pb(tmp_path_factory):
    """Python stubs for proto/loom/v1, generated with grpcio-tools for this session."""
    return load_stubs(str(tmp_path_factory.mktemp("loom_pb")))


@pytest.fixture(scope="session")
def loom_pipelines_pb(loom_pb):
    from loom_grpc import load_pipeline_stubs
    return load_pipeline_stubs()


@pytest.fixture(scope="session")
def mr_server():
    """An instance with room for the MapReduce pipeline's prompts and a small document limit."""
    s = LoomServer("--max-model-len", "2048", "--mapreduce-max-document-bytes", "100000",
                   "--max-batched-tokens", "512")
    yield s
    assert s.stop() == 0, "".join(s.log)
