"""An OpenAI-compatible Chat Completions server for tests.

It checks each request's shape as the OpenAI API defines it (model, a
non-empty list of messages with roles and content, an optional
response_format with a JSON schema) and answers from a script the test
gives: a canned reply, a status code (429 with Retry-After, 500), a delay,
or a malformed body. Requests are recorded for the test to inspect.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROLES = {"system", "developer", "user", "assistant", "tool"}


def check_request(body):
    """Returns None when `body` is a valid Chat Completions request, else why not."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model must be a non-empty string"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty array"
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            return f"bad message {m!r}"
        if not isinstance(m.get("content"), (str, list)):
            return f"message content must be a string or parts: {m!r}"
    rf = body.get("response_format")
    if rf is not None:
        if rf.get("type") not in ("text", "json_object", "json_schema"):
            return f"bad response_format type {rf.get('type')!r}"
        if rf["type"] == "json_schema":
            schema = rf.get("json_schema")
            if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
                return "json_schema needs a name"
            if not isinstance(schema.get("schema"), dict):
                return "json_schema needs a schema object"
    return None


def completion(model, content, prompt_tokens=12, completion_tokens=30, finish="stop"):
    return {
        "id": f"chatcmpl-{int(time.time() * 1e6)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class FakeLlm:
    """Serves on 127.0.0.1 (a free port) until stop().

    `script(body) -> (status, headers, body_bytes_or_obj, delay_s)` decides
    each answer; the default echoes a fixed reply.
    """

    def __init__(self, script=None):
        self.requests = []
        self.script = script or (lambda body: (200, {}, completion(body["model"], "ok"), 0))
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                    return self.reply(404, {}, {"error": {"message": "not found"}})
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length))
                except ValueError:
                    return self.reply(400, {}, {"error": {"message": "body is not JSON"}})
                why = check_request(body)
                owner.requests.append({"body": body, "headers": dict(self.headers), "invalid": why})
                if why:
                    return self.reply(400, {}, {"error": {"message": why, "type": "invalid_request_error"}})
                status, headers, answer, delay = owner.script(body)
                if delay:
                    time.sleep(delay)
                self.reply(status, headers, answer)

            def reply(self, status, headers, answer):
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
