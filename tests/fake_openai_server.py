"""A small OpenAI-compatible `/v1/chat/completions` server on 127.0.0.1 for the endpoint backend's tests."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeServer:
    """A `/v1/chat/completions` server in a thread. `mode`: ok | flaky (500 twice per prompt) | 500 | 400 | hang,
    or a malformed 200 answer: not_json | no_choices | null_content | bad_finish."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.active = 0
        self.max_active = 0
        self.release = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    key = f"{body['messages'][0]['content']}|{body['seed']}"
                    server.attempts[key] = server.attempts.get(key, 0) + 1
                    attempt = server.attempts[key]
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                self._left = False
                try:
                    if self.path != "/v1/chat/completions":
                        return self._send(404, {"error": f"no route {self.path}"})
                    if server.mode == "hang":
                        server.release.wait(10)
                        return None
                    if server.mode == "500" or (server.mode == "flaky" and attempt <= 2):
                        return self._send(500, {"error": "overloaded"})
                    if server.mode == "400":
                        return self._send(400, {"error": "model 'nope' does not exist"})
                    if server.mode == "not_json":
                        return self._send(200, "<html>gateway says hello</html>")
                    if server.mode == "no_choices":
                        return self._send(200, {"id": "x", "object": "chat.completion", "choices": []})
                    if server.mode == "null_content":
                        message = {"role": "assistant", "content": None}
                        return self._send(200, {"choices": [{"message": message, "finish_reason": "stop"}]})
                    if server.mode == "bad_finish":
                        message = {"role": "assistant", "content": "hi"}
                        return self._send(200, {"choices": [{"message": message, "finish_reason": "banana"}]})
                    time.sleep(0.02)  # lets concurrent requests overlap
                    text = f"echo {body['seed'] % 1000} {body['messages'][0]['content'][:20]}"
                    long = body["seed"] % 3 == 0
                    return self._send(
                        200,
                        {
                            "id": "x",
                            "object": "chat.completion",
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": text},
                                    "finish_reason": "length" if long else "stop",
                                }
                            ],
                            "usage": {
                                "prompt_tokens": 5,
                                "completion_tokens": body["max_tokens"] if long else 4,
                            },
                        },
                    )
                finally:
                    self._leave()

            def _leave(self):
                # once per request, before its answer is written: a client that reads the answer and sends its
                # next request at once must not be counted twice
                if not self._left:
                    self._left = True
                    with server.lock:
                        server.active -= 1

            def _send(self, status, payload):
                self._leave()
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
