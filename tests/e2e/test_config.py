"""`loom serve --config FILE`: settings come from the file, flags override it, and a bad file stops
the server with a message naming the problem."""
import json
import subprocess

import httpx
import pytest

from conftest import LOOM_BIN, MODEL, ROOT, LoomServer


def test_shipped_config_parses_and_flags_override(tmp_path):
    cfg = json.load(open(f"{ROOT}/config/loom.json"))
    cfg["engine"]["max_tokens_cap"] = 8
    cfg["engine"]["served_model_name"] = "from-config"
    path = tmp_path / "loom.json"
    path.write_text(json.dumps(cfg))
    # The command line's --port 0 (conftest) overrides the file's 8080.
    s = LoomServer("--config", str(path), "--max-prompt-tokens", "100")
    try:
        models = httpx.get(s.url + "/v1/models", timeout=10).json()
        assert models["data"][0]["id"] == "from-config"
        r = httpx.post(s.url + "/v1/completions", timeout=30,
                       json={"model": "from-config", "prompt": "hi", "max_tokens": 9})
        assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
        r = httpx.post(s.url + "/v1/completions", timeout=30,
                       json={"model": "from-config", "prompt": "hi " * 150, "max_tokens": 2})
        assert r.status_code == 400
    finally:
        assert s.stop() == 0


@pytest.mark.parametrize("content, message", [
    ('{"engine": {"max_num_seqs": "many"}}', "--max-num-seqs"),
    ('{"bogus_setting": 1}', "unknown setting --bogus-setting"),
    ('{"port": ', "is not a JSON object"),
])
def test_bad_config_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    p = subprocess.run([LOOM_BIN, "serve", "--model", MODEL, "--port", "0", "--config", str(path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert message in p.stderr, p.stderr
