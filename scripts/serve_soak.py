#!/usr/bin/env python3
"""Serve soak: one `baton serve` under churning clients, killed clients included.

    scripts/serve_soak.py [--baton PATH] [--minutes 30] [--kill-every 20] [--smoke] [--out DIR]

`baton serve --allow-client-shm` serves the embedded default models (gRPC and
HTTP on loopback) for --minutes while three kinds of client come and go:
  - verified runs: `baton run --server ... --verify` of the default workload,
    10 s each, cycling through unary calls, `--streaming`,
    `--shared-memory system` and both;
  - killed runs: every --kill-every seconds a `baton run --server
    --shared-memory system` (every other one `--streaming` too) gets SIGKILL
    once it is sending, leaving its calls, its stream and its shared memory
    regions behind;
  - REST: health, a valid JSON inference, /metrics and four bad requests
    (malformed JSON, a wrong datatype, a wrong shape, an unknown model), in a
    loop over new connections.
The server's RSS and open descriptors are sampled every second. Checks:
  - the server stays up, exits 0 on SIGTERM, prints no sanitizer report;
  - every verified run exits 0, with every answer verified against
    whole-model ONNX Runtime, 0 mismatches, nothing failed;
  - every killed run was still running when it was killed;
  - REST: every valid request answered 200, every bad one 400;
  - at the end no shared memory region is left registered, and at least one
    was dropped per killed client (baton_shared_memory_regions_reclaimed_total);
  - RSS growth below 5 % and open descriptors up by at most 8: the peak over
    the last fifth of the samples against the peak over the second fifth.
--smoke (what CI runs): 30 s, a kill every 6 s, 3 s verified runs; RSS and
descriptors printed but not judged (too short for a trend). It prints a summary line and exits 1 when a check fails.
"""
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load_common import has_sanitizer_report, parser, report_problems, rss_mb, setup  # noqa: E402

VARIANTS = ([], ["--streaming"], ["--shared-memory", "system"], ["--shared-memory", "system", "--streaming"])


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def read_until(proc, done, timeout):
    """What `proc` printed (stdout, a binary pipe) until done(text) or timeout
    seconds or its end: read from the descriptor, so nothing waits in a buffer."""
    text = ""
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    while not done(text) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            text += chunk.decode(errors="replace")
    return text


def start_server(baton, out, env):
    cmd = [baton, "serve", "-q", "--allow-client-shm", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"]
    err = open(os.path.join(out, "serve.err"), "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
    pattern = r"KServe v2 (gRPC|HTTP) listening on 127\.0\.0\.1:(\d+)"
    # The first start may profile the models.
    text = read_until(proc, lambda t: len(re.findall(pattern, t)) >= 2, 300)
    ports = {kind: int(port) for kind, port in re.findall(pattern, text)}
    if len(ports) < 2:
        proc.kill()
        proc.wait()
        with open(os.path.join(out, "serve.err")) as f:
            print(f"serve_soak.py: baton serve did not start:\n{text}{f.read()[-3000:]}", file=sys.stderr)
        sys.exit(2)
    return proc, ports["gRPC"], ports["HTTP"]


class Soak:
    def __init__(self, baton, out, env, grpc_port, http_port, args):
        self.baton, self.out, self.env, self.args = baton, out, env, args
        self.address = f"127.0.0.1:{grpc_port}"
        self.http = f"http://127.0.0.1:{http_port}"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.problems = []
        self.runs = {" ".join(v) or "unary": 0 for v in VARIANTS}
        self.completed = 0
        self.kills = 0
        self.rest_ok = 0
        self.rest_bad = 0

    def problem(self, text):
        with self.lock:
            self.problems.append(text)
        print("FAIL " + text, flush=True)

    # --- verified runs -------------------------------------------------------
    def verified_runs(self):
        duration = 3 if self.args.smoke else 10
        i = 0
        while not self.stop.is_set():
            variant = VARIANTS[i % len(VARIANTS)]
            name = " ".join(variant) or "unary"
            report = os.path.join(self.out, f"run-{i}.json")
            cmd = [self.baton, "run", "--server", self.address, *variant, "--duration", str(duration),
                   "--warmup", "0.5", "--verify", "--quiet", "--json", report]
            r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=duration + 300)
            i += 1
            output = r.stdout + r.stderr
            if has_sanitizer_report(output):
                self.problem(f"verified run {i} ({name}) printed a sanitizer report")
            if r.returncode != 0:
                self.problem(f"verified run {i} ({name}) exited {r.returncode}: {output[-2000:]}")
                continue
            with open(report) as f:
                j = json.load(f)
            failed = sum(m["failed"] for m in j["models"])
            if j["verify"]["checked"] <= 0 or j["verify"]["mismatches"] != 0 or failed != 0:
                self.problem(f"verified run {i} ({name}): verify {j['verify']}, failed {failed}: " +
                             "; ".join(m.get("first_error", "") for m in j["models"]))
            with self.lock:
                self.runs[name] += 1
                self.completed += j["completed"]
            os.remove(report)

    # --- killed runs ---------------------------------------------------------
    def killed_runs(self):
        rng = random.Random(1)
        while not self.stop.wait(self.args.kill_every):
            variant = ["--shared-memory", "system"] + (["--streaming"] if self.kills % 2 else [])
            cmd = [self.baton, "run", "--server", self.address, *variant, "--duration", "600", "--slices", "600",
                   "--warmup", "0"]
            proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            seen = read_until(proc, lambda t: "slice 1/" in t, 120)
            time.sleep(rng.uniform(0.0, 1.0))  # anywhere in a call: writing, waiting, answered
            running = proc.poll() is None
            proc.kill()
            proc.wait()
            proc.stdout.close()
            if not running or "slice 1/" not in seen:
                self.problem(f"killed run {self.kills + 1} was not sending when it was to be killed "
                             f"(exit {proc.returncode}): {seen[-2000:]}")
            with self.lock:
                self.kills += 1

    # --- REST ----------------------------------------------------------------
    def request(self, path, body=None):
        req = urllib.request.Request(self.http + path, data=body.encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"} if body is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def rest(self):
        status, text = self.request("/v2/models/audio")
        if status != 200:
            self.problem(f"GET /v2/models/audio answered {status}: {text[:500]}")
            return
        meta = json.loads(text)
        rng = random.Random(2)
        inputs = []
        for t in meta["inputs"]:
            shape = [1 if d < 0 else d for d in t["shape"]]
            n = 1
            for d in shape:
                n *= d
            inputs.append({"name": t["name"], "shape": shape, "datatype": t["datatype"],
                           "data": [round(rng.uniform(-1, 1), 4) for _ in range(n)]})
        good = json.dumps({"inputs": inputs})
        first = inputs[0]
        bad = {
            "malformed JSON": ("/v2/models/audio/infer", good[:-7]),
            "a wrong datatype": ("/v2/models/audio/infer",
                                 json.dumps({"inputs": [dict(first, datatype="INT64")] + inputs[1:]})),
            "a wrong shape": ("/v2/models/audio/infer",
                              json.dumps({"inputs": [dict(first, shape=first["shape"] + [2])] + inputs[1:]})),
            "an unknown model": ("/v2/models/nope/infer", good),
        }
        while not self.stop.wait(0.05):
            checks = [("/v2/health/ready", None, 200, "ready"), ("/v2/models/audio/infer", good, 200, "infer"),
                      ("/metrics", None, 200, "metrics")]
            checks += [(path, body, 400, what) for what, (path, body) in bad.items()]
            for path, body, want, what in checks:
                status, text = self.request(path, body)
                if status != want:
                    self.problem(f"REST {what} answered {status}, want {want}: {text[:500]}")
                elif want == 200:
                    with self.lock:
                        self.rest_ok += 1
                else:
                    with self.lock:
                        self.rest_bad += 1


def peak(samples, part):
    fifth = max(1, len(samples) // 5)
    window = samples[fifth:2 * fifth] if part == "early" else samples[-fifth:]
    return max(window) if window else (max(samples) if samples else 0)


def main():
    ap = parser(__doc__)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--kill-every", type=float, default=20)
    args = ap.parse_args()
    if args.smoke:
        args.minutes, args.kill_every = 0.5, 6.0
    baton, out, env = setup(args, "serve_soak.py")
    server, grpc_port, http_port = start_server(baton, out, env)
    soak = Soak(baton, out, env, grpc_port, http_port, args)
    threads = [threading.Thread(target=t, daemon=True) for t in (soak.verified_runs, soak.killed_runs, soak.rest)]
    for t in threads:
        t.start()
    rss, fds = [], []
    end = time.monotonic() + args.minutes * 60
    while time.monotonic() < end and server.poll() is None:
        r, n = rss_mb(server.pid), open_fds(server.pid)
        if r is not None and n is not None:
            rss.append(r)
            fds.append(n)
        time.sleep(1.0)
    soak.stop.set()
    for t in threads:
        t.join(timeout=400)
    problems = list(soak.problems)
    if server.poll() is not None:
        problems.append(f"baton serve died during the soak (exit {server.returncode})")
    else:
        status, text = soak.request("/v2/systemsharedmemory/status")
        if status != 200 or json.loads(text) != []:
            problems.append(f"shared memory regions left registered at the end: {status} {text[:500]}")
        status, metrics = soak.request("/metrics")
        m = re.search(r"^baton_shared_memory_regions_reclaimed_total (\d+)$", metrics, re.M)
        reclaimed = int(m.group(1)) if m else -1
        if reclaimed < soak.kills:
            problems.append(f"{reclaimed} shared memory regions dropped for {soak.kills} killed clients "
                            "(want at least one each)")
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            problems.append("baton serve did not exit within 60 s of SIGTERM")
        if server.returncode != 0:
            problems.append(f"baton serve exited {server.returncode} on SIGTERM (want 0)")
    with open(os.path.join(out, "serve.err")) as f:
        if has_sanitizer_report(f.read()):
            problems.append(f"baton serve printed a sanitizer report (see {out}/serve.err)")
    rss_early, rss_late = peak(rss, "early"), peak(rss, "late")
    growth = (rss_late - rss_early) / rss_early if rss_early > 0 else 0.0
    fd_early, fd_late = peak(fds, "early"), peak(fds, "late")
    runs = ", ".join(f"{n} {v}" for v, n in soak.runs.items())
    print(f"{args.minutes:g} min: verified runs {runs} ({soak.completed} requests); {soak.kills} clients killed; "
          f"REST {soak.rest_ok} answered 200, {soak.rest_bad} bad requests answered 400; server RSS "
          f"{rss_early:.0f} MB after warm-up -> {rss_late:.0f} MB at the end ({100 * growth:+.1f} %), open "
          f"descriptors {fd_early} -> {fd_late}; files in {out}")
    if sum(soak.runs.values()) == 0:
        problems.append("no verified run finished")
    if soak.kills == 0:
        problems.append("no client was killed")
    if not args.smoke:
        if growth >= 0.05:
            problems.append(f"the server's RSS grew {100 * growth:.1f} % after warm-up (limit 5 %)")
        if fd_late > fd_early + 8:
            problems.append(f"the server's open descriptors grew from {fd_early} to {fd_late} (limit +8)")
    return report_problems(problems)


if __name__ == "__main__":
    sys.exit(main())
