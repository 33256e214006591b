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
                owner.requests.append({"body": body, "headers": {k.lower(): v for k, v in self.headers.items()}, "invalid": why})
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


def judge_script(log_path):
    """A judge for the evaluator tests, by what the rubric contains:
    MALFORMED answers prose, OUT-OF-RANGE scores 7, RATE-LIMIT is refused
    with 429 (Retry-After: 1) the first time, SLOW answers after 3 seconds
    the first time (past the caller's timeout), DOWN always fails with 503,
    BAD-REQUEST gets 400; otherwise the score is 0.9 when the answer is
    "correct", else 0.2. Every request is appended to `log_path` as JSON.
    """
    seen = set()
    lock = threading.Lock()

    def script(body):
        prompt = body["messages"][-1]["content"]
        with lock:
            first = prompt not in seen
            seen.add(prompt)
        if "RATE-LIMIT" in prompt and first:
            return 429, {"Retry-After": "1"}, {"error": {"message": "slow down", "type": "rate_limit"}}, 0
        if "SLOW" in prompt and first:
            return 200, {}, completion(body["model"], json.dumps({"score": 1, "reason": "late"})), 3
        if "DOWN" in prompt:
            return 503, {}, {"error": {"message": "overloaded"}}, 0
        if "BAD-REQUEST" in prompt:
            return 400, {}, {"error": {"message": "context too long"}}, 0
        if "MALFORMED" in prompt:
            content = "I think it is pretty good."
        elif "OUT-OF-RANGE" in prompt:
            content = json.dumps({"score": 7, "reason": "very good"})
        else:
            score = 0.9 if "correct" in prompt else 0.2
            content = json.dumps({"score": score, "reason": "judged"})
        return 200, {}, completion(body["model"] + "-0301", content, prompt_tokens=100, completion_tokens=10), 0

    return script


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", required=True, help="where to write the port once listening")
    parser.add_argument("--log", required=True, help="a JSON line per request")
    args = parser.parse_args()
    llm = FakeLlm(judge_script(args.log))
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(llm.port))
    import os

    os.replace(args.port_file + ".tmp", args.port_file)

    def record_loop():
        written = 0
        while True:
            time.sleep(0.05)
            with open(args.log, "a") as f:
                while written < len(llm.requests):
                    r = llm.requests[written]
                    f.write(json.dumps({
                        "prompt": r["body"]["messages"][-1]["content"],
                        "authorization": r["headers"].get("authorization"),
                        "response_format": r["body"].get("response_format", {}).get("type"),
                        "invalid": r["invalid"],
                    }) + "\n")
                    written += 1

    record_loop()
