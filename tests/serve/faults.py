#!/usr/bin/python3
"""nanochat serve under load and faults, with /metrics read by Prometheus's own parser
(Debian's python3-prometheus-client). Run by ctest as serve.faults:

    /usr/bin/python3 tests/serve/faults.py NANOCHAT_BINARY

Each check is a function named check_*; a failure names it. The servers are started here on
free loopback ports.
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from prometheus_client.parser import text_string_to_metric_families

BINARY = os.path.abspath(sys.argv[1])
PROMPT = "fn fibonacci(n: u64) -> u64 {"


class Server:
    """`nanochat serve --port 0 ARGS...`, up once /health says ok."""

    def __init__(self, *args):
        self.cache = tempfile.TemporaryDirectory(prefix="nanochat-serve-faults-")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("NANOCHAT_ARG_") and k not in ("NANOCHAT_API_KEY", "NANOCHAT_ISA")}
        env["NANOCHAT_CACHE"] = self.cache.name
        self.proc = subprocess.Popen([BINARY, "serve", "--port", "0", *args], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.stderr = ""
        line = self.proc.stderr.readline()
        self.stderr += line
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        assert m, f"serve did not start: {line}"
        self.port = int(m.group(1))
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("serve never became healthy")

    def _drain(self):
        for line in self.proc.stderr:
            self.stderr += line

    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path):
        c = self.conn()
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body, dict(r.getheaders())

    def post(self, path, body, timeout=120):
        c = self.conn(timeout)
        c.request("POST", path, body=body if isinstance(body, bytes) else json.dumps(body),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data, dict(r.getheaders())

    def metrics(self):
        status, body, headers = self.get("/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, sig=signal.SIGTERM, timeout=30):
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.cache.cleanup()
        return code


def completion(server, seed, max_tokens=16, stream=False):
    return server.post("/v1/completions", {"prompt": PROMPT, "max_tokens": max_tokens,
                                            "seed": seed, "temperature": 1, "stream": stream})


def sse_text(body):
    text, done = "", False
    for line in body.decode().split("\n"):
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            for c in json.loads(line[6:])["choices"]:
                text += c.get("text", "")
    return text, done


def check_load_every_request_answered_or_refused(server, reference):
    """1, 4, 8 and 32 clients at once against 2 slots and a queue of 4: each request gets its
    own complete answer (the text its seed gives alone) or a clean 503 with Retry-After."""
    rss_before = server.rss_kib()
    for clients in (1, 4, 8, 32):
        results = [None] * clients

        def client(i):
            try:
                results[i] = completion(server, i % 8, stream=(i % 2 == 1))
            except Exception as e:  # noqa: BLE001 (reported below)
                results[i] = e

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        start = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert time.time() - start < 120, f"{clients} clients took too long"
        answered = refused = 0
        for i, r in enumerate(results):
            assert not isinstance(r, Exception) and r is not None, f"client {i}: {r!r}"
            status, body, headers = r
            if status == 503:
                refused += 1
                assert headers.get("Retry-After") == "1", headers
                assert json.loads(body)["error"]["code"] == "server_busy"
                continue
            assert status == 200, (status, body[:200])
            answered += 1
            if i % 2 == 1:
                text, done = sse_text(body)
                assert done, "a stream ends with [DONE]"
            else:
                text = json.loads(body)["choices"][0]["text"]
            assert text == reference[i % 8], f"client {i} got another request's tokens"
        assert answered + refused == clients
        assert answered >= min(clients, 6), f"{clients} clients: only {answered} answered"
        if clients <= 4:
            assert refused == 0, f"{clients} clients fit in 2 slots + 4 waiting"
        print(f"  {clients} clients: {answered} answered, {refused} refused with 503")
    grown = server.rss_kib() - rss_before
    assert grown < 200 * 1024, f"memory grew by {grown} KiB under load"


def settled_metrics(server):
    """/metrics once the completion counters stop moving: a request's count is recorded after its
    last byte is sent, so the previous check's last answers may still be counted for a moment."""
    wait_idle(server)
    previous = None
    for _ in range(50):
        metrics = server.metrics()
        counts = {k: v for k, v in metrics.items()
                  if k[0] == "nanochat_http_requests_total"
                  and ("endpoint", "/v1/completions") in k[1]}
        if counts == previous:
            return metrics
        previous = counts
        time.sleep(0.1)
    return metrics


def check_metrics_count_what_happened(server, _reference):
    before = settled_metrics(server)
    for seed in range(3):
        status, _, _ = completion(server, seed, max_tokens=8)
        assert status == 200
    status, _, _ = server.post("/v1/completions", {"prompt": PROMPT, "temperature": "hot"})
    assert status == 400
    after = settled_metrics(server)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("nanochat_http_requests_total", endpoint="/v1/completions", status="200") == 3
    assert delta("nanochat_http_requests_total", endpoint="/v1/completions", status="400") == 1
    assert delta("nanochat_generations_total") == 3
    assert delta("nanochat_generation_tokens_total") >= 3
    assert delta("nanochat_prompt_tokens_total") >= 3 * 10
    assert delta("nanochat_time_to_first_token_seconds_count") == 3
    assert delta("nanochat_request_duration_seconds_count") == 3
    assert delta("nanochat_queue_wait_seconds_count") == 3
    assert after[("nanochat_request_duration_seconds_bucket", (("le", "+Inf"),))] == \
        after[("nanochat_request_duration_seconds_count", ())]
    assert after[("nanochat_slots", ())] == 2
    assert after[("nanochat_requests_running", ())] == 0
    assert after[("nanochat_model_loaded", ())] == 1
    assert 0 <= after[("nanochat_kv_cache_usage_ratio", ())] <= 1
    assert after[("nanochat_model_load_seconds", ())] > 0
    info = [k for k in after if k[0] == "nanochat_build_info"]
    assert info and dict(info[0][1])["model"] == "nanochat-rust", info


def wait_idle(server, seconds=5):
    deadline = time.time() + seconds
    while time.time() < deadline:
        health = json.loads(server.get("/health")[1])
        if health["slots_processing"] == 0 and health["requests_waiting"] == 0:
            return True
        time.sleep(0.05)
    return False


def check_disconnect_mid_stream_cancels(server, _reference):
    s = socket.create_connection(("127.0.0.1", server.port))
    body = json.dumps({"prompt": PROMPT, "max_tokens": 100000, "ignore_eos": True,
                       "stream": True}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    received = b""
    s.settimeout(30)
    while b"data: " not in received:
        chunk = s.recv(4096)
        assert chunk, "the connection closed before the stream started"
        received += chunk
    health = json.loads(server.get("/health")[1])
    assert health["slots_processing"] == 1, health
    s.close()
    assert wait_idle(server, 2), "the generation was not cancelled after the client left"


def check_half_request_and_garbage(server, reference):
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"pro")
    garbage = socket.create_connection(("127.0.0.1", server.port))
    garbage.sendall(bytes(range(256)) * 4 + b"\r\n\r\n")
    garbage.settimeout(10)
    reply = garbage.recv(4096)
    assert reply == b"" or reply.startswith(b"HTTP/1.1 400"), reply[:100]
    garbage.close()
    # Others are served while the stalled client holds its connection...
    status, body, _ = completion(server, 0)
    assert status == 200 and json.loads(body)["choices"][0]["text"] == reference[0]
    # ...which the server drops after its read timeout (--read-timeout 2).
    stalled.settimeout(10)
    start = time.time()
    data = stalled.recv(4096)
    assert time.time() - start < 8, "the stalled connection was not dropped"
    assert data == b"" or data.startswith(b"HTTP/1.1 400"), data[:100]
    stalled.close()


def check_wrong_method_and_missing_body(server, _reference):
    # A path this server answers, asked with another method: 405 with Allow, at once.
    for method, path, allow in [("GET", "/v1/chat/completions", "POST"),
                                ("PUT", "/v1/completions", "POST"),
                                ("POST", "/v1/models", "GET, HEAD"), ("DELETE", "/health", "GET, HEAD")]:
        c = server.conn(10)
        c.request(method, path, body=b"{}" if method in ("PUT", "POST") else None)
        r = c.getresponse()
        data = r.read()
        c.close()
        assert r.status == 405 and r.getheader("Allow") == allow, (method, path, r.status, data)
        error = json.loads(data)["error"]
        assert error["code"] == "method_not_allowed" and path in error["message"], data
    # A POST with neither Content-Length nor chunks (curl -X POST without -d): 411 at once, not
    # a wait of --read-timeout for a body that is not coming.
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.settimeout(10)
    start = time.time()
    raw.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = b""
    while b"\r\n\r\n" not in reply or b"}}" not in reply:  # headers and body may come apart
        data = raw.recv(4096)
        if not data:
            break
        reply += data
    raw.close()
    assert reply.startswith(b"HTTP/1.1 411"), reply[:100]
    assert b"no body" in reply and time.time() - start < 1.5, (reply, time.time() - start)


def check_bad_values(server, _reference):
    cases = [
        ({"prompt": PROMPT, "top_k": -1}, "top_k"),
        ({"prompt": PROMPT, "seed": "x"}, "seed"),
        ({"prompt": PROMPT, "stream": "yes"}, "stream"),
        ({"prompt": PROMPT, "max_tokens": 2 ** 70}, "max_tokens"),
        ({"prompt": PROMPT, "frequency_penalty": -5}, "frequency_penalty"),
        ({"messages": "hi"}, "messages"),
    ]
    for body, param in cases:
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        status, data, _ = server.post(path, body)
        assert status == 400, (body, status, data)
        assert json.loads(data)["error"]["param"] == param, (body, data)
    status, data, _ = server.post("/v1/completions", b'{"prompt": "x", "temperature": 1e400}')
    assert status == 400 and "1e400" in json.loads(data)["error"]["message"], data
    status, data, _ = server.post("/v1/completions", b'{"prompt": ')
    message = json.loads(data)["error"]["message"]
    assert status == 400 and message.startswith("the request body is not valid JSON: "), data
    assert "json.exception" not in message, data  # the parser's position, not its class name
    status, data, _ = server.post("/v1/completions", b"\xff\xfe{}")
    assert status == 400, data
    status, data, _ = server.post("/v1/chat/completions", [1, 2])
    assert status == 400 and "JSON object" in json.loads(data)["error"]["message"]


def check_sigterm_finishes_running_requests(_server, _reference):
    """SIGTERM: a running stream finishes, the port closes, exit 0; an endless one is cancelled
    at --drain-timeout."""
    server = Server("-np", "2", "-c", "8192", "--drain-timeout", "1")
    results = {}

    def short():
        results["short"] = completion(server, 1, max_tokens=64, stream=True)

    def endless():
        results["endless"] = server.post("/v1/completions", {
            "prompt": PROMPT, "max_tokens": 100000, "ignore_eos": True, "stream": True})

    threads = [threading.Thread(target=short), threading.Thread(target=endless)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    start = time.time()
    code = server.stop(signal.SIGTERM, timeout=20)
    elapsed = time.time() - start
    for t in threads:
        t.join(10)
    assert code == 0, f"exit status {code}: {server.stderr}"
    assert elapsed < 5, f"took {elapsed:.1f} s to stop"
    status, body, _ = results["short"]
    assert status == 200 and sse_text(body)[1], "the short stream completed"
    status, body, _ = results["endless"]
    assert status == 200
    text, done = sse_text(body)
    assert done and text, "the endless stream was cancelled and ended cleanly"
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
        raise AssertionError("the port is still open after exit")
    except OSError:
        pass


def main():
    server = Server("-np", "2", "--max-queue", "4", "--read-timeout", "2")
    failed = []
    try:
        reference = {}
        for seed in range(8):
            status, body, _ = completion(server, seed)
            assert status == 200, body
            reference[seed] = json.loads(body)["choices"][0]["text"]
        checks = [v for k, v in globals().items() if k.startswith("check_")]
        for check in checks:
            try:
                check(server, reference)
                print(f"ok   {check.__name__}")
            except Exception:  # noqa: BLE001 (each check's failure is reported by name)
                failed.append(check.__name__)
                print(f"FAIL {check.__name__}\n{traceback.format_exc()}")
    finally:
        code = server.stop()
        if code != 0:
            failed.append(f"exit status {code} after SIGTERM")
    if failed:
        print("failed: " + ", ".join(failed))
        print(server.stderr[-3000:])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
