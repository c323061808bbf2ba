"""A server process for tests, benchmarks and load tests: starts it, finds its port (from its stderr
when it picks one itself, e.g. `loom serve --port 0`), waits for GET /health to answer 200, keeps
its stderr for failure messages, and stops it with SIGTERM.

  from server_process import ServerProcess, LOOM_LISTENING
  s = ServerProcess([loom, "serve", "--port", "0"], "loom serve", port_re=LOOM_LISTENING)
  ...  s.url, s.port, s.log, s.grpc_target()
  assert s.stop() == 0
"""
import re
import signal
import subprocess
import threading
import time

import httpx

LOOM_LISTENING = r"listening on http://[^:]+:(\d+)"
LOOM_GRPC_LISTENING = r"gRPC listening on [^ ]+:(\d+)"


class ServerProcess:
    def __init__(self, argv, name, port_re=None, port=None, cwd=None, env=None,
                 start_new_session=False, start_timeout=60, health_timeout=120):
        self.name = name
        self.log = []
        self.port = port
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True,
                                     start_new_session=start_new_session)
        got = threading.Event()

        def pump():  # keeps stderr drained and remembers it (bounded) for failure messages
            for line in self.proc.stderr:
                self.log.append(line)
                if len(self.log) > 2000:
                    del self.log[:1000]
                if port_re and self.port is None:
                    m = re.search(port_re, line)
                    if m:
                        self.port = int(m.group(1))
                        got.set()
            got.set()

        threading.Thread(target=pump, daemon=True).start()
        if port_re and (not got.wait(start_timeout) or self.port is None):
            self.kill()
            raise RuntimeError(f"{name} did not start:\n" + "".join(self.log[-30:]))
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + health_timeout
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{name} never became healthy:\n" + "".join(self.log[-30:]))

    def grpc_target(self):
        """127.0.0.1:port of `loom serve`'s gRPC server, from the line it prints before loading."""
        for line in self.log:
            m = re.search(LOOM_GRPC_LISTENING, line)
            if m:
                return f"127.0.0.1:{m.group(1)}"
        raise RuntimeError(f"{self.name} printed no gRPC port:\n" + "".join(self.log[-20:]))

    def stop(self, timeout=30):
        """SIGTERM, then the exit code (None when it had to be killed after `timeout`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
