#!/usr/bin/env python3
"""Times the monitoring queries through the embedded library (no server):
`lookout sql --repeat 5` runs each query once to warm up, then 5 times in one
process, and reports the median wall time of those runs."""
import argparse
import glob
import json
import os
import re
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = {}
    for path in sorted(glob.glob(os.path.join(a.queries, "*.sql"))):
        p = subprocess.run([a.bin, "sql", "--data", a.db, "--repeat", "5", "--file", path],
                           capture_output=True, text=True, check=True,
                           env={**os.environ, "LOOKOUT_LOG": "warn"})
        m = re.search(r"time: median ([0-9.]+) ms over 5 runs \(([^)]*)\)", p.stderr)
        if not m:
            raise SystemExit(f"no timing for {path}: {p.stderr}")
        name = os.path.basename(path)
        out[name] = {"median_ms": float(m.group(1)), "runs_ms": [float(x) for x in m.group(2).split(", ")]}
        print(f"[lookout library] {name}: median {out[name]['median_ms']:.1f} ms", file=sys.stderr)
    json.dump(out, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
