#!/usr/bin/env python3
"""Soak test: the default workload through two agents, one killed and restarted every minute.

    scripts/soak.py [--baton PATH] [--minutes 30] [--kill-every 60] [--smoke] [--out DIR]

`baton run --verify` runs the embedded default workload (`baton run
--print-config`'s models) on two agents (`edge1`, `edge2`, one 1-thread CPU
PU each, on loopback) for --minutes, in 2 s slices, without baselines. Every
--kill-every seconds one agent (in turn) gets SIGKILL and is restarted on its
port at once; its work goes to the other meanwhile. The run's RSS is sampled
every second. Checks:
  - 0 lost (nothing abandoned at a drain limit), 0 answered twice;
  - every answer verified against whole-model ONNX Runtime, 0 mismatches;
  - no request failed;
  - RSS growth below 5 %: the peak over the last fifth of the samples against
    the peak over the second fifth (the first fifth is warm-up);
  - no sanitizer report; the agents exit 0 on SIGTERM.
--smoke (what CI runs): 30 s, a kill every 10 s, RSS printed but not judged (too short
for a trend). It prints a summary line and exits 1 when a check fails.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load_common import Agent, free_port, parser, report_problems, rss_mb, run_problems, setup  # noqa: E402


def default_models(baton, env):
    text = subprocess.run([baton, "run", "--print-config"], env=env, check=True, capture_output=True,
                          text=True).stdout
    lines = text.splitlines()
    start = lines.index("models:")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith(" "))
    return "\n".join(lines[start:end]) + "\n"


def main():
    ap = parser(__doc__)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--kill-every", type=float, default=60)
    args = ap.parse_args()
    if args.smoke:
        args.minutes, args.kill_every = 0.5, 10.0
    baton, out, env = setup(args, "soak.py")

    agents = []
    devices = []
    for name in ("edge1", "edge2"):
        port = free_port()
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "agent.yaml"), "w") as f:
            f.write(f"name: {name}\npus:\n  - {{name: {name}cpu, kind: cpu, threads: 1}}\n")
        agents.append(Agent(baton, port, d, env))
        devices.append(f"  - {{name: {name}, address: 127.0.0.1:{port}}}\n")
    duration = args.minutes * 60
    config = os.path.join(out, "soak.yaml")
    with open(config, "w") as f:
        f.write("devices:\n" + "".join(devices) + default_models(baton, env) +
                "policy: {high_level: whole, device_placement: round_robin}\n"
                f"run: {{duration_s: {duration:.0f}, warmup_s: 1, slices: {max(1, int(duration / 2))}, "
                "baselines: false}\n")
    for a in agents:
        a.start()
    report_path = os.path.join(out, "soak.json")
    log = open(os.path.join(out, "run.log"), "w")
    run = subprocess.Popen([baton, "run", config, "--no-profile", "--verify", "--json", report_path],
                           stdout=log, stderr=subprocess.STDOUT, env=env)
    began = time.monotonic()
    rss = []
    kills = 0
    next_kill = began + args.kill_every
    while run.poll() is None:
        r = rss_mb(run.pid)
        if r is not None:
            rss.append(r)
        if time.monotonic() >= next_kill:
            victim = agents[kills % 2]
            victim.kill()
            victim.start(wait=False)
            kills += 1
            next_kill += args.kill_every
        time.sleep(1.0)
    log.close()
    agent_rcs = [a.stop() for a in agents]
    with open(os.path.join(out, "run.log")) as f:
        output = f.read()
    if run.returncode not in (0, 1) or not os.path.exists(report_path):
        print(f"soak.py: baton run exited {run.returncode}:\n{output[-3000:]}", file=sys.stderr)
        return 2
    with open(report_path) as f:
        r = json.load(f)
    fifth = max(1, len(rss) // 5)
    early = max(rss[fifth:2 * fifth]) if len(rss) >= 2 * fifth else (max(rss) if rss else 0.0)
    late = max(rss[-fifth:]) if rss else 0.0
    growth = (late - early) / early if early > 0 else 0.0
    failed = sum(m["failed"] for m in r["models"])
    completed = sum(m["completed"] for m in r["models"])
    lost = {d["name"]: d["lost"] for d in r["devices"]}
    print(f"{args.minutes:g} min, {kills} kills; completed {completed}, failed {failed}, abandoned {r['abandoned']}, "
          f"answered twice {r['answered_twice']}; verified {r['verify']['checked']}, mismatches "
          f"{r['verify']['mismatches']}; agents found lost {lost}; RSS {early:.0f} MB after warm-up -> {late:.0f} MB "
          f"at the end ({100 * growth:+.1f} %); files in {out}")
    problems = run_problems(r, output, agents, agent_rcs)
    if sum(lost.values()) < kills:
        problems.append(f"the agents were found lost {sum(lost.values())}x for {kills} kills")
    if not args.smoke and growth >= 0.05:
        problems.append(f"RSS grew {100 * growth:.1f} % after warm-up (limit 5 %)")
    return report_problems(problems)


if __name__ == "__main__":
    sys.exit(main())
