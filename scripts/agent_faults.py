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
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load_common import Agent, free_port, parser, report_problems, run_problems, setup  # noqa: E402


def main():
    ap = parser(__doc__)
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--interval", type=float, default=1.5)
    ap.add_argument("--stop-s", type=float, default=4.0)
    args = ap.parse_args()
    if args.smoke:
        args.kills, args.stop_s = 3, 0.0
    baton, out, env = setup(args, "agent_faults.py")
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
    problems += run_problems(r, output, [agent], [agent_rc])
    if edge["lost"] < kills:
        problems.append(f"the agent was found lost {edge['lost']}x for {kills} kills")
    if not args.smoke and detect_s is not None and detect_s > 3.0:
        problems.append(f"a SIGSTOPped agent was found lost after {detect_s:.2f} s (limit: 2 s of silence)")
    return report_problems(problems)


if __name__ == "__main__":
    sys.exit(main())
