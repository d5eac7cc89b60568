"""A loopback HTTP proxy that injects faults between bucketfs and moto_server, fake-gcs-server or any HTTP store.

Each request is matched against `proxy.plan(method, path, headers)` (with `plan_takes_body`, also the request
body: a GCS multipart upload names its object in the body), which returns one action:

- "pass"         forward as is
- "strip"        forward without If-None-Match / If-Match (a server that ignores conditional writes)
- "500", "503"   answer that status without forwarding
- "slowdown"     answer 503 with the S3 SlowDown error, without forwarding
- "429"          answer 429 with GCS's rateLimitExceeded error, without forwarding
- "reset"        close the connection (RST) before forwarding
- "stall"        forward, send the headers and half the body, wait `stall_seconds`, then cut the connection
- "drop"         forward (the server applies the request), then close without answering

`proxy.injected` counts the actions taken other than "pass"; `proxy.requests` counts every request.
Response headers that name the upstream (a GCS resumable session's `Location`) are rewritten to name the proxy,
so that the session's requests come through it too (and the daemon, which refuses a session on another host,
accepts them).
Bounded by construction: the plan decides, the test bounds the plan.
"""
import collections
import http.client
import http.server
import socket
import socketserver
import struct
import threading
import time

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "expect"}
SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b'<Message>Please reduce your request rate.</Message></Error>')
RATE_LIMITED = (b'{"error": {"code": 429, "message": "The rate of change requests to the object is too high.",'
                b' "errors": [{"reason": "rateLimitExceeded"}]}}')


class FaultProxy:
    def __init__(self, upstream_port, stall_seconds=2.0):
        self.upstream_port = upstream_port
        self.stall_seconds = stall_seconds
        self.plan = lambda method, path, headers: "pass"
        self.plan_takes_body = False
        self.injected = collections.Counter()
        self.requests = collections.Counter()
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_any(self):
                body = self._read_body()
                with proxy.lock:
                    if proxy.plan_takes_body:
                        action = proxy.plan(self.command, self.path, self.headers, body or b"")
                    else:
                        action = proxy.plan(self.command, self.path, self.headers)
                    proxy.requests[self.command] += 1
                    if action != "pass":
                        proxy.injected[action] += 1
                if action in ("500", "503", "slowdown", "429"):
                    status = 503 if action == "slowdown" else int(action)
                    payload = {"slowdown": SLOWDOWN, "429": RATE_LIMITED}.get(action, b"")
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Content-Type", "application/json" if action == "429" else "application/xml")
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if action == "reset":
                    self._reset()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if action == "strip":
                    headers = {k: v for k, v in headers.items() if k.lower() not in ("if-none-match", "if-match")}
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                finally:
                    upstream.close()
                if action == "drop":
                    self._reset()
                    return
                self.send_response(response.status, response.reason)
                for k, v in response.getheaders():
                    if k.lower() not in HOP_BY_HOP and k.lower() not in ("content-length", "date", "server"):
                        self.send_header(k, v.replace(upstream_origin, own_origin))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if action == "stall" and self.command != "HEAD" and len(payload) > 1:
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    time.sleep(proxy.stall_seconds)
                    self._reset()
                    return
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_any

            def _read_body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _reset(self):
                # SO_LINGER 0: close sends RST, like a crashed load balancer.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request, client_address):
                pass    # a client that hangs up on a fault it was dealt is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        upstream_origin = f"127.0.0.1:{upstream_port}"
        own_origin = f"127.0.0.1:{self.port}"
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
