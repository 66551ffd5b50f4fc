"""A real HTTP/1.1 server on a loopback port for nanochat's download tests (Python's
http.server, threaded), serving files from a folder with ETags, Last-Modified, byte ranges and
If-Range, plus routes that misbehave on purpose:

  /files/NAME                the file (HEAD, GET, Range, If-Range)
  /slow/NAME                 the same, 64 KiB every 20 ms (to kill a client mid-transfer)
  /drop/NAME                 the first request is cut off after half the file
  /flaky/NAME                the first request answers 500, later ones the file
  /redirect/N/NAME           N redirects (302) before /files/NAME
  /auth/NAME                 needs "Authorization: Bearer secret-token" (401 without, 403 wrong)
  /lie-long/NAME             announces 1000 bytes more than it sends, then closes
  /lie-short/NAME            announces 1000 bytes fewer than the file has
  /chunked/NAME              no Content-Length (chunked transfer), so the size is unknown
  /hf/OWNER/REPO/resolve/REV/NAME   Hugging Face's scheme: 302 to /files/NAME (on `cdn`, another
                             server, when set) with X-Linked-Etag "<sha256 of the file>" (or
                             `linked_etag_override`); OWNER "private" needs the bearer token
  anything else              404

Every request is logged (method, path, Range header, bytes of body sent) in `server.log`.
"""
import email.utils
import hashlib
import http.server
import os
import socket
import threading
import time


class ModelServer:
    def __init__(self, root, host="127.0.0.1"):
        self.root = root
        self.cdn = None  # another ModelServer the hub's redirects point to
        self.log = []
        self.lock = threading.Lock()
        self.hits = {}
        self.linked_etag_override = None
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                outer.handle(self, head=True)

            def do_GET(self):
                outer.handle(self, head=False)

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def bytes_sent(self, path_part):
        with self.lock:
            return sum(e["sent"] for e in self.log if path_part in e["path"])

    def requests(self, path_part):
        with self.lock:
            return [e for e in self.log if path_part in e["path"]]

    # -- routing -------------------------------------------------------------------------------

    def handle(self, h, head):
        entry = {"method": h.command, "path": h.path, "range": h.headers.get("Range"),
                 "if_range": h.headers.get("If-Range"),
                 "auth": h.headers.get("Authorization"), "sent": 0, "status": 0}
        with self.lock:
            self.log.append(entry)
            count = self.hits.get(h.path, 0) + 1
            self.hits[h.path] = count
        parts = h.path.split("/")[1:]
        try:
            route = parts[0]
            if route == "files" and len(parts) == 2:
                return self.send_file(h, entry, parts[1], head)
            if route == "slow" and len(parts) == 2:
                return self.send_file(h, entry, parts[1], head, slow=True)
            if route == "drop" and len(parts) == 2:
                return self.send_file(h, entry, parts[1], head, cut=0.5 if count == 1 else None)
            if route == "flaky" and len(parts) == 2:
                if count == 1:
                    return self.status(h, entry, 500, "try again")
                return self.send_file(h, entry, parts[1], head)
            if route == "redirect" and len(parts) == 3:
                n = int(parts[1])
                target = f"/redirect/{n - 1}/{parts[2]}" if n > 1 else f"/files/{parts[2]}"
                return self.redirect(h, entry, target)
            if route == "auth" and len(parts) == 2:
                auth = h.headers.get("Authorization")
                if auth is None:
                    return self.status(h, entry, 401, "token needed")
                if auth != "Bearer secret-token":
                    return self.status(h, entry, 403, "wrong token")
                return self.send_file(h, entry, parts[1], head)
            if route == "lie-long" and len(parts) == 2:
                return self.send_file(h, entry, parts[1], head, length_delta=1000)
            if route == "lie-short" and len(parts) == 2:
                return self.send_file(h, entry, parts[1], head, length_delta=-1000)
            if route == "chunked" and len(parts) == 2:
                return self.send_chunked(h, entry, parts[1])
            if route == "hf" and len(parts) >= 6 and parts[3] == "resolve":
                name = "/".join(parts[5:])
                if parts[1] == "private":
                    auth = h.headers.get("Authorization")
                    if auth is None:
                        return self.status(h, entry, 401, "token needed")
                    if auth != "Bearer secret-token":
                        return self.status(h, entry, 403, "wrong token")
                path = os.path.join(self.root, name)
                if not os.path.isfile(path):
                    return self.status(h, entry, 404, "no such file")
                sha = self.linked_etag_override or hashlib.sha256(open(path, "rb").read()).hexdigest()
                base = self.cdn.url if self.cdn else ""
                return self.redirect(h, entry, f"{base}/files/{name}", {"X-Linked-Etag": f'"{sha}"'})
        except (BrokenPipeError, ConnectionResetError):
            return
        return self.status(h, entry, 404, "not found")

    # -- responses -----------------------------------------------------------------------------

    def status(self, h, entry, code, text):
        body = text.encode()
        entry["status"] = code
        h.send_response(code)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def redirect(self, h, entry, target, extra=None):
        entry["status"] = 302
        h.send_response(302)
        h.send_header("Location", target)
        h.send_header("Content-Length", "0")
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()

    def validators(self, path):
        st = os.stat(path)
        etag = '"%s"' % hashlib.sha256(f"{st.st_mtime_ns}-{st.st_size}-{st.st_ino}".encode()).hexdigest()[:20]
        return etag, email.utils.formatdate(st.st_mtime, usegmt=True)

    def send_file(self, h, entry, name, head, slow=False, cut=None, length_delta=0):
        path = os.path.join(self.root, name)
        if not os.path.isfile(path):
            return self.status(h, entry, 404, "no such file")
        data = open(path, "rb").read()
        etag, modified = self.validators(path)
        start, code = 0, 200
        rng = h.headers.get("Range")
        if_range = h.headers.get("If-Range")
        if rng and (if_range is None or if_range in (etag, modified)):
            spec = rng.removeprefix("bytes=")
            first = int(spec.split("-")[0])
            if first >= len(data):
                entry["status"] = 416
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            start, code = first, 206
        body = data[start:]
        entry["status"] = code
        h.send_response(code)
        h.send_header("ETag", etag)
        h.send_header("Last-Modified", modified)
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(body) + length_delta))
        if code == 206:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data) + length_delta}")
        h.end_headers()
        if head:
            return
        if length_delta < 0:
            body = body[:len(body) + length_delta]
        limit = len(body) if cut is None else int(len(data) * cut) - start
        step = 64 * 1024
        at = 0
        while at < limit:
            chunk = body[at:min(limit, at + step)]
            h.wfile.write(chunk)
            h.wfile.flush()
            at += len(chunk)
            entry["sent"] += len(chunk)
            if slow:
                time.sleep(0.02)
        if cut is not None or length_delta > 0:
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)

    def send_chunked(self, h, entry, name):
        path = os.path.join(self.root, name)
        data = open(path, "rb").read()
        entry["status"] = 200
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i in range(0, len(data), 65536):
            chunk = data[i:i + 65536]
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            entry["sent"] += len(chunk)
        h.wfile.write(b"0\r\n\r\n")
