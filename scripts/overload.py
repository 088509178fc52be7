#!/usr/bin/env python3
"""Overload test: Poisson arrivals at multiples of baton's measured capacity.

    scripts/overload.py [--baton PATH] [--factors 2,10] [--duration S] [--smoke] [--out DIR]

1. Measures capacity: `baton run` with closed loops (2 per PU), no baselines.
2. For each factor F, runs Poisson arrivals at F x capacity and samples the
   process's RSS every 0.2 s.
3. Checks, per factor:
   - the queue bound holds: the admitted requests' p99 latency is at most
     (queue slots per PU + 2) x the capacity run's p99 service latency x 2;
   - rejections are immediate: their p99 is at most 20 ms;
   - RSS stays flat: the peak of the last third of the samples is within 10 %
     (+ 8 MB) of the peak of the first third;
   - overload is rejected, not failed: rejected > 0, failed == 0;
   - every PU's reported utilisation is within [0, 1].
   It prints one table row per factor and exits 1 when a check fails.

--smoke (what CI runs): short runs at 10x only. It checks what does not depend
on timing (rejections happen, nothing fails, utilisation within [0, 1]) and
prints the timing figures without judging them: CI machines are shared and
noisy, and tests never assert wall-clock times.

Every run is a plain `baton run --json`; the files stay in --out.
"""
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load_common import has_sanitizer_report, parser, rss_mb, setup  # noqa: E402

PUS = 2
MAX_QUEUE = 32


def config_text(arrival, duration, slices):
    pus = ", ".join(f"{{name: cpu{i}, kind: cpu, threads: 1, cores: [{i % os.cpu_count()}]}}" for i in range(PUS))
    return (f"devices: [{{name: local, pus: [{pus}]}}]\n"
            f"models: [{{name: cls, path: zoo:squeezenet, arrival: {arrival}}}]\n"
            "policy: {high_level: whole}\n"
            f"run: {{duration_s: {duration}, warmup_s: 0.3, slices: {slices}, baselines: false, "
            f"max_queue: {MAX_QUEUE}, max_in_flight: 1000}}\n")


def run(baton, out, name, arrival, duration, slices, env):
    cfg = os.path.join(out, name + ".yaml")
    js = os.path.join(out, name + ".json")
    with open(cfg, "w") as f:
        f.write(config_text(arrival, duration, slices))
    cmd = [baton, "run", cfg, "--no-profile", "--json", js]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    samples = []
    output = []
    reader = threading.Thread(target=lambda: output.append(proc.stdout.read()))
    reader.start()
    while proc.poll() is None:
        r = rss_mb(proc.pid)
        if r is not None:
            samples.append(r)
        time.sleep(0.2)
    reader.join()
    text = "".join(output)
    if has_sanitizer_report(text):
        sys.exit(f"overload.py: `{' '.join(cmd)}` printed a sanitizer report:\n{text}")
    # 0 = done; 1 = some request failed (judged below from the JSON).
    if proc.returncode not in (0, 1):
        sys.exit(f"overload.py: `{' '.join(cmd)}` exited {proc.returncode}:\n{''.join(output)}")
    with open(js) as f:
        report = json.load(f)
    return report, samples


def main():
    ap = parser(__doc__)
    ap.add_argument("--factors", default="2,10")
    ap.add_argument("--duration", type=float, default=6.0)
    args = ap.parse_args()
    baton, out, env = setup(args, "overload.py")
    factors = [10.0] if args.smoke else [float(x) for x in args.factors.split(",")]
    duration = 1.0 if args.smoke else args.duration

    cap_report, _ = run(baton, out, "capacity", f"{{mode: closed, concurrency: {2 * PUS}}}",
                        0.5 if args.smoke else 3.0, 1, env)
    cap_model = cap_report["baton"]["models"][0] if "baton" in cap_report else cap_report["models"][0]
    capacity = cap_model["throughput_rps"]
    service_p99 = cap_model["latency_ms"]["p99"]
    if capacity <= 0:
        sys.exit("overload.py: the capacity run completed nothing")
    print(f"capacity: {capacity:.1f} req/s (closed loop, {2 * PUS} in flight on {PUS} PUs), "
          f"p99 {service_p99:.2f} ms; max_queue {MAX_QUEUE}; files in {out}")
    bound_ms = (MAX_QUEUE / PUS + 2) * service_p99 * 2
    print("| factor | offered req/s | completed/s | rejected | failed | unfinished | admitted p99 ms "
          "| bound ms | rejection p99 ms | RSS first/last third MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    problems = []
    for factor in factors:
        rate = factor * capacity
        report, rss = run(baton, out, f"overload_{factor:g}x", f"{{mode: poisson, rate: {rate:.1f}}}", duration,
                          1 if args.smoke else 3, env)
        m = report["models"][0]
        admitted_p99 = m["latency_ms"]["p99"]
        reject_p99 = m["rejection_latency_ms"]["p99"]
        third = max(1, len(rss) // 3)
        first, last = (max(rss[:third]), max(rss[-third:])) if rss else (0.0, 0.0)
        print(f"| {factor:g}x | {rate:.0f} | {m['throughput_rps']:.1f} | {m['rejected']} | {m['failed']} "
              f"| {m['unfinished']} | {admitted_p99:.2f} | {bound_ms:.1f} | {reject_p99:.3f} "
              f"| {first:.0f} / {last:.0f} |")
        where = f"{factor:g}x"
        if m["completed"] <= 0:
            problems.append(f"{where}: nothing completed")
        if m["rejected"] <= 0:
            problems.append(f"{where}: nothing was rejected at {rate:.0f} req/s (queue bound {MAX_QUEUE})")
        for pu in report["pus"]:
            if not 0.0 <= pu["utilization"] <= 1.0:
                problems.append(f"{where}: PU {pu['name']} reports utilisation {pu['utilization']:.3f}, outside [0, 1]")
        if m["failed"] != 0:
            problems.append(f"{where}: {m['failed']} requests failed: {m.get('first_error', '')}")
        if not args.smoke:
            if admitted_p99 > bound_ms:
                problems.append(f"{where}: admitted p99 {admitted_p99:.1f} ms is over the queue bound {bound_ms:.1f} ms")
            if reject_p99 > 20:
                problems.append(f"{where}: rejections took {reject_p99:.1f} ms at p99 (want <= 20 ms)")
            if rss and last > first * 1.10 + 8:
                problems.append(f"{where}: RSS grew from {first:.0f} MB to {last:.0f} MB")
    for p in problems:
        print("FAIL " + p)
    if problems:
        return 1
    print("ok" + (" (smoke: timing figures printed, not judged)" if args.smoke else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
