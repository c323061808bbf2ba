#!/usr/bin/env python3
"""1,000-connection load test for `loom serve` (not part of CI: it takes about a minute or two).

  .venv/bin/python tools/loadtest.py                       # starts build/server/loom itself
  .venv/bin/python tools/loadtest.py --connections 1000 --max-concurrent-requests 256   # expect 429s

What it does, all on 127.0.0.1 only and bounded in time (--deadline-s):
  1. starts `loom serve` on a free port (--threads 1, --max-concurrent-requests and --max-waiting
     1024 by default, so all 1,000 are admitted; lower them to exercise 429), waits for /health;
  2. warms up with a few requests of the same shape, lets idle HTTP workers exit, and records the
     server's RSS (VmRSS from /proc/PID/status) as the baseline;
  3. opens --connections TCP connections at once (raw asyncio sockets; --ramp-s spreads the
     connects), and only when all are open
     sends one POST /v1/completions on each (half of them streaming, small max_tokens, ignore_eos,
     Connection: close), then reads every response to EOF; RSS and thread count are sampled
     every 50 ms;
  4. checks: every request got 200 (a complete body: `[DONE]` for streams, `choices` otherwise) or
     429; /health is 200 afterwards and the process is alive; within --settle-s the RSS returns to
     at most baseline + max(--margin-mb, --margin-pct % of baseline) + the KV pool (--kv-cache-mb;
     its pages stay resident once a block has been written, by design, so they are allowed for).
Exit status 0 when all checks pass, 1 otherwise.
"""
import argparse
import asyncio
import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_process import LOOM_LISTENING, ServerProcess  # noqa: E402
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
LOOM_BIN = os.environ.get("LOOM_BIN", os.path.join(ROOT, "build", "server", "loom"))


DEADLINE = [0.0]
RAMP = [0.0, 1]  # seconds over which connections are opened, connection count


def listen_overflows():
    """The kernel's TcpExt ListenOverflows counter (accept queue full), or None."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
        for head, vals in zip(lines[::2], lines[1::2]):
            if head.startswith("TcpExt:"):
                return int(dict(zip(head.split(), vals.split()))["ListenOverflows"])
    except (OSError, KeyError, ValueError):
        return None
    return None


def proc_status(pid):
    """(VmRSS in MiB, Threads) of a process, or (None, None) when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None, None
    rss = re.search(r"VmRSS:\s+(\d+) kB", text)
    thr = re.search(r"Threads:\s+(\d+)", text)
    return (int(rss.group(1)) / 1024 if rss else None), (int(thr.group(1)) if thr else None)


def start_server(args):
    argv = [args.loom_bin, "serve", "--model", args.model, "--port", "0", "--host", "127.0.0.1",
            "--threads", str(args.threads), "--max-concurrent-requests", str(args.max_concurrent_requests),
            "--max-waiting", str(args.max_waiting), "--http-threads", str(args.http_threads),
            "--kv-cache-mb", str(args.kv_cache_mb), "--max-model-len", "512",
            "--request-timeout-s", str(int(args.deadline_s))]
    try:
        s = ServerProcess(argv, "loom serve", port_re=LOOM_LISTENING, cwd=ROOT,
                          start_new_session=True)
    except RuntimeError as e:
        raise SystemExit(str(e))
    return s.proc, s.port, s.url, s.log


def request_bytes(port, i, max_tokens, model):
    stream = i % 2 == 1
    body = {"model": model, "prompt": f"Request number {i}. Write a short sentence about the sea.",
            "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    data = json.dumps(body).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    return stream, head + data


async def one_connection(port, i, max_tokens, model, all_open, opened, connect_timeout, deadline):
    """Opens a connection, waits until every connection is open, then sends its request."""
    stream, req = request_bytes(port, i, max_tokens, model)
    if RAMP[0] > 0:
        await asyncio.sleep(RAMP[0] * i / max(1, RAMP[1]))
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), connect_timeout)
    except (OSError, asyncio.TimeoutError) as e:
        opened()
        return "connect-error", f"{type(e).__name__}: {e}"
    opened()
    try:
        if RAMP[0] <= 0:  # all at once: hold until every connection is open (a second or so)
            await all_open.wait()
        writer.write(req)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), max(1.0, deadline - time.time()))
    except (OSError, asyncio.TimeoutError) as e:
        return "io-error", f"{type(e).__name__}: {e} (at +{time.time() - (deadline - DEADLINE[0]):.1f} s)"
    finally:
        writer.close()
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    if not m:
        return "bad-response", repr(data[:120])
    code = m.group(1).decode()
    if code == "200":
        body = data.split(b"\r\n\r\n", 1)[-1]
        complete = b"data: [DONE]" in body if stream else b'"choices"' in body
        if not complete:
            return "200-incomplete", repr(body[-200:])
    return code, ""


async def load(port, args, model):
    n = args.connections
    all_open = asyncio.Event()
    count = [0]

    def opened():
        count[0] += 1
        if count[0] == n:
            all_open.set()

    deadline = time.time() + args.deadline_s
    DEADLINE[0] = args.deadline_s
    RAMP[:] = [args.ramp_s, n]
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(one_connection(port, i, args.max_tokens, model, all_open, opened,
                                                args.connect_timeout_s, deadline)) for i in range(n)]
    await all_open.wait()
    t_open = time.perf_counter() - t0  # with --ramp-s: when the last connect returned
    results = await asyncio.gather(*tasks)
    return results, t_open, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loom-bin", default=LOOM_BIN)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-concurrent-requests", type=int, default=1024)
    ap.add_argument("--max-waiting", type=int, default=1024)
    ap.add_argument("--http-threads", type=int, default=1024)
    ap.add_argument("--kv-cache-mb", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--deadline-s", type=float, default=300.0, help="the whole burst must finish in this")
    ap.add_argument("--connect-timeout-s", type=float, default=60.0)
    ap.add_argument("--ramp-s", type=float, default=0.0,
                    help="open the connections evenly over this many seconds (0: all at once)")
    ap.add_argument("--settle-s", type=float, default=30.0, help="time allowed for RSS to come back")
    ap.add_argument("--margin-mb", type=float, default=32.0)
    ap.add_argument("--margin-pct", type=float, default=10.0)
    args = ap.parse_args()

    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.connections + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.connections + 1000), hard))

    proc, port, url, log = start_server(args)
    pid = proc.pid
    ok = True
    try:
        model = httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]
        # Warm-up: the same request shape, a few at a time, so first-touch allocations are done.
        warm = min(16, args.connections)
        asyncio.run(load_warmup(port, args, model, warm))
        time.sleep(12)  # HTTP workers idle for 10 s exit (down to 4)
        base_rss, base_thr = proc_status(pid)
        print(f"server pid {pid} on {url}; baseline RSS {base_rss:.1f} MiB, {base_thr} threads")

        peak = {"rss": base_rss, "thr": base_thr}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                rss, thr = proc_status(pid)
                if rss is not None:
                    peak["rss"] = max(peak["rss"], rss)
                    peak["thr"] = max(peak["thr"], thr)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        lo0 = listen_overflows()
        results, t_open, t_all = asyncio.run(load(port, args, model))
        lo1 = listen_overflows()
        stop.set()
        sampler.join()

        counts = collections.Counter(code for code, _ in results)
        other = {k: v for k, v in counts.items() if k not in ("200", "429")}
        print(f"{args.connections} connections open in {t_open:.1f} s; all answered in {t_all:.1f} s")
        print(f"responses: 200={counts.get('200', 0)} 429={counts.get('429', 0)} other={sum(other.values())}"
              + (f" {other}" if other else ""))
        bad = [(code, detail) for code, detail in results if code not in ("200", "429")]
        for code, detail in bad[:3] + bad[-2:]:
            print(f"  non-200/429: {code} {detail}")
        if lo0 is not None and lo1 is not None:
            print(f"kernel ListenOverflows during the burst (accept queue full; host-wide): {lo1 - lo0}")
        if other:
            ok = False

        alive = proc.poll() is None
        try:
            health = httpx.get(url + "/health", timeout=10).status_code
        except httpx.HTTPError as e:
            health = f"{type(e).__name__}"
        print(f"server alive: {alive}; /health after the load: {health}")
        if not alive or health != 200:
            ok = False

        allowed = base_rss + max(args.margin_mb, base_rss * args.margin_pct / 100) + args.kv_cache_mb
        t_settle = time.time() + args.settle_s
        after, thr = proc_status(pid)
        while time.time() < t_settle and after is not None and after > allowed:
            time.sleep(1)
            after, thr = proc_status(pid)
        # Give idle workers their 10 s to exit even when RSS is already within the margin.
        time.sleep(max(0.0, min(12.0, t_settle - time.time())))
        after, thr = proc_status(pid)
        try:
            stats = httpx.get(url + "/v1/engine/stats", timeout=10).json()
        except (httpx.HTTPError, ValueError):
            stats = {}
        print(f"RSS MiB: baseline {base_rss:.1f}, peak {peak['rss']:.1f}, after {after:.1f} "
              f"(allowed <= {allowed:.1f} = baseline + max({args.margin_mb:.0f} MiB, {args.margin_pct:.0f}%) "
              f"+ KV pool {args.kv_cache_mb} MiB); threads: baseline {base_thr}, peak {peak['thr']}, after {thr}")
        if stats:
            keep = {k: stats[k] for k in ("num_requests_running", "num_requests_waiting", "kv_cache_usage",
                                          "preemptions") if k in stats}
            print(f"engine stats after: {keep or stats}")
        if after is None or after > allowed:
            ok = False
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(60)
                print(f"server exit code after SIGTERM: {code}")
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                print("server did not exit within 60 s of SIGTERM (killed)")
                ok = False
        else:
            print("server died:\n" + "".join(log[-20:]))
            ok = False
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


async def load_warmup(port, args, model, n):
    ev = asyncio.Event()
    ev.set()
    deadline = time.time() + 120
    await asyncio.gather(*(one_connection(port, i, args.max_tokens, model, ev, lambda: None, 30, deadline)
                           for i in range(n)))


if __name__ == "__main__":
    sys.exit(main())
