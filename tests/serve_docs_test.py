#!/usr/bin/env python3
"""docs/serve.md's shared memory example, run against a real `baton serve`.

    tests/serve_docs_test.py BATON

Starts `baton serve --allow-client-shm --no-grpc --http 127.0.0.1:0` (the
embedded default models) and runs the Python block that follows "A Python
client with only the standard library and numpy" in docs/serve.md, with its
URL pointed at that server:
  1. as written: it must exit 0 with a finite float32[1,1000] answer, and
     leave no region registered;
  2. killed (SIGKILL) right after its answer, before it unregisters: the
     lock it held is gone with it, so the server lists no region and counts
     one in baton_shared_memory_regions_reclaimed_total.
Then SIGTERM: the server must exit 0. Exit status 0 when all holds, 1 when
a check fails (each printed), 2 when the server or the example cannot be
found.
"""
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "A Python client with only the standard library and numpy"


def example():
    with open(os.path.join(ROOT, "docs", "serve.md")) as f:
        text = f.read()
    at = text.find(MARK)
    m = re.search(r"```python\n(.*?)```", text[at:], re.S) if at >= 0 else None
    if m is None:
        print(f"serve_docs_test.py: no Python block after '{MARK}' in docs/serve.md", file=sys.stderr)
        sys.exit(2)
    return m.group(1)


def start(baton):
    proc = subprocess.Popen([baton, "serve", "-q", "--allow-client-shm", "--no-grpc", "--http", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    text = ""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout.fileno()], [], [], 1.0)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            text += chunk.decode(errors="replace")
            m = re.search(r"HTTP listening on (127\.0\.0\.1:\d+)", text)
            if m:
                return proc, "http://" + m.group(1)
        elif proc.poll() is not None:
            break
    proc.kill()
    print(f"serve_docs_test.py: baton serve did not start: {text}{proc.stderr.read().decode()}", file=sys.stderr)
    sys.exit(2)


def get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read().decode()


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    code = example()
    if 'URL = "http://127.0.0.1:8000"' not in code:
        print("serve_docs_test.py: the example no longer sets URL = \"http://127.0.0.1:8000\"", file=sys.stderr)
        return 2
    server, url = start(sys.argv[1])
    code = code.replace('URL = "http://127.0.0.1:8000"', f'URL = "{url}"')
    problems = []

    # 1. As written, plus a look at the answer.
    check = '\nassert y.shape == (1, 1000) and y.dtype == np.float32 and np.isfinite(y).all(), y\nprint("answered")\n'
    r = subprocess.run([sys.executable, "-c", code + check], capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or "answered" not in r.stdout:
        problems.append(f"the example exited {r.returncode}: {r.stdout}{r.stderr}")
    if json.loads(get(url + "/v2/systemsharedmemory/status")) != []:
        problems.append("the example left a region registered")

    # 2. Killed after its answer, before it unregisters (nothing after `y = ...` runs).
    head = code[:code.index("post(\"/v2/systemsharedmemory/region/cam/unregister\")")]
    kill = '\nprint("answered", flush=True)\nos.kill(os.getpid(), 9)\n'
    r = subprocess.run([sys.executable, "-c", head + kill], capture_output=True, text=True, timeout=120)
    if r.returncode != -signal.SIGKILL or "answered" not in r.stdout:
        problems.append(f"the killed example ended with {r.returncode}: {r.stdout}{r.stderr}")
    status = json.loads(get(url + "/v2/systemsharedmemory/status"))
    if status != []:
        problems.append(f"the killed example's region is still registered: {status}")
    metrics = get(url + "/metrics")
    if "baton_shared_memory_regions_reclaimed_total 1\n" not in metrics:
        problems.append("baton_shared_memory_regions_reclaimed_total is not 1: " +
                        "".join(line for line in metrics.splitlines(True) if "reclaimed" in line))

    server.send_signal(signal.SIGTERM)
    try:
        rc = server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        rc = server.wait()
    if rc != 0:
        problems.append(f"baton serve exited {rc} on SIGTERM: {server.stderr.read().decode()[-2000:]}")
    for p in problems:
        print("FAIL " + p)
    if not problems:
        print("docs/serve.md's shared memory example: answered, and its region dropped when it was killed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
