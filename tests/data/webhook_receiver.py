"""A webhook receiver for the alert tests: appends each POSTed JSON body as
one line to a file. Usage: webhook_receiver.py PORT_FILE OUT_FILE [FAIL_FIRST]

Binds an ephemeral port on 127.0.0.1 and writes it to PORT_FILE. With
FAIL_FIRST = k, the first k requests get HTTP 500 (to test retries)."""
import http.server
import json
import sys

port_file, out_file = sys.argv[1], sys.argv[2]
fail_first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
seen = {"count": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        seen["count"] += 1
        if seen["count"] <= fail_first:
            self.send_response(500)
            self.end_headers()
            return
        json.loads(body)  # must be JSON
        with open(out_file, "ab") as f:
            f.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os

os.replace(port_file + ".tmp", port_file)
server.serve_forever()
