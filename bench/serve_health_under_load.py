#!/usr/bin/env python3
"""Health checks of `baton serve` while its REST workers serve inference.

    bench/serve_health_under_load.py PORT MODEL [--clients N] [--seconds S] [--probe-ms MS]

N threads (default 8) each keep one connection and send POST
/v2/models/MODEL/infer (zeros, every free dimension 1) back to back for S
seconds (default 10); meanwhile one more client, in a process of its own
(so that the load's threads do not delay it) and on its own connection,
asks GET /v2/health/ready every MS ms (default 50), as a liveness probe
would. Prints the probe's median, 99th percentile and worst latency in ms,
the inference requests answered per second and their median latency, and
the errors. Start the server first, e.g.
`baton serve --no-grpc --http 127.0.0.1:PORT --threads 2 -q`.
"""
import argparse
import http.client
import json
import multiprocessing
import statistics
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("port", type=int)
ap.add_argument("model")
ap.add_argument("--clients", type=int, default=8)
ap.add_argument("--seconds", type=float, default=10)
ap.add_argument("--probe-ms", type=float, default=50)
args = ap.parse_args()


def connect():
    return http.client.HTTPConnection("127.0.0.1", args.port, timeout=120)


meta_conn = connect()
meta_conn.request("GET", f"/v2/models/{args.model}")
meta = json.loads(meta_conn.getresponse().read())
meta_conn.close()
inputs = []
for t in meta["inputs"]:
    shape = [d if d > 0 else 1 for d in t["shape"]]
    n = 1
    for d in shape:
        n *= d
    inputs.append({"name": t["name"], "shape": shape, "datatype": t["datatype"], "data": [0] * n})
body = json.dumps({"inputs": inputs})

lock = threading.Lock()
errors = []
infer_ms = []
probe_ms = []
stop_at = time.time() + args.seconds


def infer_client():
    c = connect()
    while time.time() < stop_at:
        t = time.time()
        try:
            c.request("POST", f"/v2/models/{args.model}/infer", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            with lock:
                if r.status == 200:
                    infer_ms.append((time.time() - t) * 1000)
                else:
                    errors.append(r.status)
        except Exception as e:  # counted, and the client connects again
            with lock:
                errors.append(repr(e))
            c.close()
            c = connect()


def probe(out):
    c = connect()
    times, errs = [], []
    while time.time() < stop_at:
        t = time.time()
        try:
            c.request("GET", "/v2/health/ready")
            r = c.getresponse()
            r.read()
            if r.status == 200:
                times.append((time.time() - t) * 1000)
            else:
                errs.append(r.status)
        except Exception as e:
            errs.append(repr(e))
            c.close()
            c = connect()
        time.sleep(args.probe_ms / 1000)
    out.put((times, errs))


if __name__ == "__main__":
    results = multiprocessing.Queue()
    prober = multiprocessing.Process(target=probe, args=(results,))
    prober.start()
    threads = [threading.Thread(target=infer_client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got, errs = results.get()
    prober.join()
    probe_ms.extend(got)
    errors.extend(errs)
    probe_ms.sort()
    nan = float("nan")
    p99 = probe_ms[min(len(probe_ms) - 1, int(len(probe_ms) * 0.99))] if probe_ms else nan
    print(f"probe: {len(probe_ms)} answered, median {statistics.median(probe_ms) if probe_ms else nan:.2f} ms, "
          f"p99 {p99:.2f} ms, worst {max(probe_ms) if probe_ms else nan:.2f} ms")
    print(f"inference: {len(infer_ms) / args.seconds:.1f} req/s, median "
          f"{statistics.median(infer_ms) if infer_ms else nan:.2f} ms; errors: {len(errors)} {errors[:3]}")
