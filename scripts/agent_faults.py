#!/usr/bin/env python3
"""Agent fault test: kill -9 and SIGSTOP a `baton agent` during a verified run.

    scripts/agent_faults.py [--baton PATH] [--kills N] [--interval S] [--stop-s S] [--smoke] [--out DIR]

A `baton run --verify` with two models, one on a local device and one on an
agent (`edge`, on loopback); the local device is every partition's fallback.
Once the run measures, this script:
  1. kills the agent with SIGKILL N times (default 100), restarting it on the
     same port at once; each time it waits until the run reports the agent
     back ("is back"), and at least --interval seconds (default 1.5);
  2. stops it with SIGSTOP for --stop-s seconds (default 4), then SIGCONT;
  3. sends the run SIGINT (it finishes its 2 s slice and writes its report).
Checks (the run's JSON and its log):
  - 0 lost: no request was abandoned at a drain limit; 0 answered twice;
  - every answer verified against whole-model ONNX Runtime, 0 mismatches;
  - no request failed: each lost assignment was re-issued to the local device;
  - the agent was found lost once per kill, and rejoined within 10 s each time;
  - a SIGSTOPped agent was found lost (full run: within 3 s; the rule is 2 s
    of silence) and rejoined after SIGCONT;
  - no sanitizer report from either process; the agent exits 0 on SIGTERM.
It prints the rejoin times (median, max) and the detection time.
--smoke (what CI runs): 3 kills and no SIGSTOP; timing is printed, not judged.
Exit status: 0 all checks held, 1 a check failed, 2 the setup failed.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer", "runtime error:")


def find_baton():
    for d in ("build/release", "build/ci"):
        p = os.path.join(ROOT, d, "tools/baton/baton")
        if os.path.exists(p):
            return p
    return shutil.which("baton")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    def __init__(self, baton, port, out, env):
        self.cmd = [baton, "agent", "--listen", f"127.0.0.1:{port}", "--config", os.path.join(out, "agent.yaml")]
        self.log = open(os.path.join(out, "agent.log"), "a")
        self.env = env
        self.proc = None
        self.starts = 0

    def start(self, wait=True):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self.log, env=self.env, text=True)
        self.starts += 1
        if wait:
            line = self.proc.stdout.readline()
            if "listening on" not in line:
                print(f"agent_faults.py: the agent did not start: {line!r}", file=sys.stderr)
                sys.exit(2)

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self):
        self.signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baton", default=None)
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--interval", type=float, default=1.5)
    ap.add_argument("--stop-s", type=float, default=4.0)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.smoke:
        args.kills, args.stop_s = 3, 0.0
    baton = args.baton or find_baton()
    if not baton:
        print("agent_faults.py: no baton binary; build first or give --baton", file=sys.stderr)
        return 2
    out = args.out or tempfile.mkdtemp(prefix="baton_agent_faults_")
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("BATON_CACHE_DIR", os.path.join(out, "cache"))
    port = free_port()
    with open(os.path.join(out, "agent.yaml"), "w") as f:
        f.write("name: edge\npus:\n  - {name: ecpu0, kind: cpu, threads: 1}\n")
    # Long enough for every fault; SIGINT ends it after the slice running then
    # (2 s slices), once the faults are done.
    duration = 2 * (args.kills * (args.interval + 2) + args.stop_s + 20)
    slices = max(1, int(duration / 2))
    config = os.path.join(out, "faults.yaml")
    with open(config, "w") as f:
        f.write("devices:\n"
                "  - {name: local, pus: [{name: cpu0, kind: cpu, threads: 1}]}\n"
                f"  - {{name: edge, address: 127.0.0.1:{port}}}\n"
                "models:\n"
                "  - {name: cam, path: zoo:squeezenet, arrival: {mode: closed, concurrency: 2}}\n"
                "  - {name: kws, path: zoo:lstm, arrival: {mode: closed, concurrency: 2}}\n"
                "policy: {high_level: whole, device_placement: round_robin}\n"
                f"run: {{duration_s: {duration:.1f}, warmup_s: 0.5, slices: {slices}, baselines: false}}\n")

    agent = Agent(baton, port, out, env)
    agent.start()
    report_path = os.path.join(out, "faults.json")
    run = subprocess.Popen([baton, "run", config, "--no-profile", "--verify", "--json", report_path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    # The run's lines, with when they came: "device 'edge' is lost" / "is back".
    lines = []
    lock = threading.Lock()

    def read():
        for line in run.stdout:
            with lock:
                lines.append((time.monotonic(), line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def events(kind, since):
        with lock:
            return [t for t, line in lines if t >= since and f"device 'edge' {kind}" in line]

    def wait_for(kind, since, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and run.poll() is None:
            found = events(kind, since)
            if found:
                return found[0]
            time.sleep(0.02)
        return None

    problems = []
    # Faults start once the run measures (its first "slice" line).
    start_wait = time.monotonic() + 120
    while time.monotonic() < start_wait and run.poll() is None:
        with lock:
            if any("slice" in line or "measuring" in line for _, line in lines):
                break
        time.sleep(0.05)
    time.sleep(0.5)
    kills = 0
    rejoin_s = []
    for _ in range(args.kills):
        if run.poll() is not None:
            break
        killed_at = time.monotonic()
        agent.kill()
        kills += 1
        agent.start(wait=False)
        back = wait_for("is back", killed_at, args.interval + 10)
        if back is None:
            problems.append(f"kill {kills}: the restarted agent did not rejoin within {args.interval + 10:.0f} s")
            break
        rejoin_s.append(back - killed_at)
        time.sleep(max(0.0, args.interval - (time.monotonic() - killed_at)))
    detect_s = None
    if args.stop_s > 0 and run.poll() is None and not problems:
        stopped_at = time.monotonic()
        agent.signal(signal.SIGSTOP)
        lost = wait_for("is lost", stopped_at, args.stop_s)
        time.sleep(max(0.0, args.stop_s - (time.monotonic() - stopped_at)))
        agent.signal(signal.SIGCONT)
        if lost is None:
            problems.append(f"a SIGSTOPped agent was not found lost within {args.stop_s:g} s")
        else:
            detect_s = lost - stopped_at
            if wait_for("is back", stopped_at + args.stop_s, 15) is None:
                problems.append("the agent did not rejoin after SIGCONT")
    time.sleep(1.0)
    run.send_signal(signal.SIGINT)  # the slice running finishes, then the report is written
    try:
        run.wait(timeout=120)
    except subprocess.TimeoutExpired:
        run.kill()
        run.wait()
        problems.append("baton run did not finish within 120 s of SIGINT")
    reader.join(timeout=10)
    agent_rc = agent.stop()
    with lock:
        output = "".join(line for _, line in lines)
    with open(os.path.join(out, "run.log"), "w") as f:
        f.write(output)
    if run.returncode not in (0, 1, 130) or not os.path.exists(report_path):
        print(f"agent_faults.py: baton run exited {run.returncode}:\n{output}", file=sys.stderr)
        return 2
    with open(report_path) as f:
        r = json.load(f)
    edge = next(d for d in r["devices"] if d["name"] == "edge")
    failed = sum(m["failed"] for m in r["models"])
    completed = sum(m["completed"] for m in r["models"])
    max_ms = max(m["latency_ms"]["max"] for m in r["models"])
    rejoin = sorted(rejoin_s)
    rejoin_text = (f"rejoin after a restart: median {rejoin[len(rejoin) // 2]:.2f} s, max {rejoin[-1]:.2f} s"
                   if rejoin else "no rejoin measured")
    print(f"kills {kills}, SIGSTOP {args.stop_s:g} s (found lost after "
          f"{'-' if detect_s is None else f'{detect_s:.2f} s'}); {rejoin_text}; agent found lost {edge['lost']}x, "
          f"{edge['returned']} assignments handed back, {r['reissued']} re-issued, {r['rerouted']} rerouted; "
          f"completed {completed}, failed {failed}, abandoned {r['abandoned']}, answered twice "
          f"{r['answered_twice']}; verified {r['verify']['checked']}, mismatches {r['verify']['mismatches']}; "
          f"slowest answer {max_ms:.0f} ms; files in {out}")
    with open(os.path.join(out, "agent.log")) as f:
        agent_log = f.read()
    for name, text in (("baton run", output), ("the agent", agent_log)):
        if any(mark in text for mark in SANITIZER_MARKS):
            problems.append(f"{name} printed a sanitizer report (see {out})")
    if agent_rc != 0:
        problems.append(f"the agent exited {agent_rc} on SIGTERM (want 0)")
    if r["abandoned"] != 0:
        problems.append(f"{r['abandoned']} requests were lost (abandoned at the drain limit)")
    if r["answered_twice"] != 0:
        problems.append(f"{r['answered_twice']} requests were answered twice")
    if r["verify"]["checked"] <= 0 or r["verify"]["mismatches"] != 0:
        problems.append(f"verification: {r['verify']}")
    if failed != 0:
        problems.append(f"{failed} requests failed: " + "; ".join(m.get("first_error", "") for m in r["models"]))
    if edge["lost"] < kills:
        problems.append(f"the agent was found lost {edge['lost']}x for {kills} kills")
    if not args.smoke and detect_s is not None and detect_s > 3.0:
        problems.append(f"a SIGSTOPped agent was found lost after {detect_s:.2f} s (limit: 2 s of silence)")
    for p in problems:
        print("FAIL " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
