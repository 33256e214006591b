"""Extended-protocol exchanges sent byte for byte to PostgreSQL and to Lookout.

Each scenario is a list of client messages; the answers (message types, data
rows, command tags, SQLSTATEs) must be the same from both servers. Drivers
cannot send some of these (Execute of a portal declared in SQL, with a row
limit), so the messages are built here.

Usage: protocol.py "<host> <port> <user> <db>" "<host> <port> <user> <db>"
"""

import socket
import struct
import sys


def message(kind, body=b""):
    return kind + struct.pack(">i", len(body) + 4) + body


def execute(portal, max_rows):
    return message(b"E", portal.encode() + b"\0" + struct.pack(">i", max_rows))


def query(sql):
    return message(b"Q", sql.encode() + b"\0")


SYNC = message(b"S")


def parse_bind(portal, sql):
    """Parse the unnamed statement, then bind it to `portal` (text results)."""
    return message(b"P", b"\0" + sql.encode() + b"\0\0\0") + message(
        b"B", portal.encode() + b"\0\0" + struct.pack(">hhh", 0, 0, 0)
    )

DECLARE = "BEGIN; DECLARE c CURSOR FOR SELECT value::int AS v FROM generate_series(1, 10) AS value"

SCENARIOS = {
    "execute a cursor portal with a row limit": [
        query(DECLARE),
        message(b"D", b"Pc\0") + execute("c", 3) + execute("c", 3) + execute("c", 0)
        + execute("c", 2) + SYNC,
        query("COMMIT"),
    ],
    "a row limit equal to what remains": [
        query(DECLARE),
        execute("c", 10) + execute("c", 1) + SYNC,
        query("CLOSE c; COMMIT"),
    ],
    "FETCH after Execute, Execute after FETCH": [
        query(DECLARE),
        execute("c", 2) + SYNC,
        query("FETCH 3 FROM c"),
        execute("c", 0) + SYNC,
        query("COMMIT"),
    ],
    "a cursor without HOLD ends with its transaction": [
        query(DECLARE),
        query("COMMIT"),
        query("FETCH 1 FROM c"),
        execute("c", 1) + SYNC,
    ],
    "a cursor WITH HOLD outlives it": [
        query("BEGIN; DECLARE h CURSOR WITH HOLD FOR SELECT value::int AS v FROM generate_series(1, 5) AS value; COMMIT"),
        query("FETCH 2 FROM h"),
        execute("h", 2) + execute("h", 2) + SYNC,
        query("CLOSE h"),
    ],
    "a cursor rolled back": [
        query(DECLARE),
        query("ROLLBACK"),
        execute("c", 1) + SYNC,
    ],
    "a bound portal read in portions": [
        query("BEGIN"),
        parse_bind("p", "SELECT value::int AS v FROM generate_series(1, 7) AS value")
        + execute("p", 3) + execute("p", 3) + execute("p", 3) + execute("p", 0) + SYNC,
        query("COMMIT"),
    ],
    "the unnamed portal, all at once and in portions": [
        parse_bind("", "SELECT value::int AS v FROM generate_series(1, 5) AS value")
        + execute("", 0) + SYNC,
        query("BEGIN"),
        parse_bind("", "SELECT value::int AS v FROM generate_series(1, 5) AS value")
        + execute("", 2) + execute("", 0) + SYNC,
        query("COMMIT"),
    ],
    "a portal that does not exist": [
        execute("nope", 0) + SYNC,
        query("SELECT 1"),
    ],
}


class Connection:
    def __init__(self, spec):
        host, port, user, database = spec.split()
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.buffer = b""
        body = struct.pack(">i", 196608)
        for key, value in (("user", user), ("database", database)):
            body += key.encode() + b"\0" + value.encode() + b"\0"
        body += b"\0"
        self.sock.sendall(struct.pack(">i", len(body) + 4) + body)
        self.until_ready()

    def until_ready(self):
        """The messages up to ReadyForQuery, comparable across servers."""
        answers = []
        while True:
            while len(self.buffer) < 5 or len(self.buffer) < 1 + struct.unpack(">i", self.buffer[1:5])[0]:
                data = self.sock.recv(65536)
                if not data:
                    raise RuntimeError("connection closed")
                self.buffer += data
            kind = self.buffer[0:1].decode()
            length = struct.unpack(">i", self.buffer[1:5])[0]
            payload, self.buffer = self.buffer[5:1 + length], self.buffer[1 + length:]
            if kind in "DC":
                answers.append((kind, payload))
            elif kind == "E":
                fields = dict((f[:1], f[1:]) for f in payload.split(b"\0") if f)
                answers.append((kind, fields.get(b"C")))
            elif kind == "T":
                count = struct.unpack(">h", payload[:2])[0]
                answers.append((kind, count, payload[2:].split(b"\0")[0]))
            elif kind in "sIn2t1":
                answers.append((kind,))
            elif kind == "Z":
                answers.append((kind, payload))
                return answers

    def exchange(self, data):
        self.sock.sendall(data)
        return self.until_ready()


def main():
    failed = 0
    for name, steps in SCENARIOS.items():
        postgres, lookout = Connection(sys.argv[1]), Connection(sys.argv[2])
        for step in steps:
            want, got = postgres.exchange(step), lookout.exchange(step)
            if want != got:
                failed += 1
                print(f"DIFFER {name}:\n  postgres: {want}\n  lookout:  {got}")
                break
    print(f"protocol: {len(SCENARIOS) - failed} of {len(SCENARIOS)} scenarios agree")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
