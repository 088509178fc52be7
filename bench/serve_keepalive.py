#!/usr/bin/env python3
"""More kept-alive REST clients than `baton serve` has workers.

    bench/serve_keepalive.py PORT CLIENTS [--requests N] [--think-ms MS] [--random-think] [--reconnect P]

CLIENTS threads, each with a kept-alive connection (http.client), ask
GET /v2/health/live N times (default 10), waiting MS ms (default 200; with
--random-think, a random 0..MS) between requests, and opening a new
connection with probability P (default 0) after each. Prints every
client's worst latency in ms, then the requests answered, the errors, the
worst latency and the wall time. Start the server first, e.g.
`baton serve --no-grpc --http 127.0.0.1:PORT --threads 2 -q`.
"""
import argparse
import http.client
import random
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("port", type=int)
ap.add_argument("clients", type=int)
ap.add_argument("--requests", type=int, default=10)
ap.add_argument("--think-ms", type=float, default=200)
ap.add_argument("--random-think", action="store_true")
ap.add_argument("--reconnect", type=float, default=0.0)
args = ap.parse_args()

lock = threading.Lock()
worst = {}
errors = []
answered = [0]


def connect():
    return http.client.HTTPConnection("127.0.0.1", args.port, timeout=120)


def client(i):
    c = connect()
    w = 0.0
    for _ in range(args.requests):
        t = time.time()
        try:
            c.request("GET", "/v2/health/live")
            r = c.getresponse()
            r.read()
            with lock:
                if r.status == 200:
                    answered[0] += 1
                else:
                    errors.append(r.status)
        except Exception as e:  # counted, and the client connects again
            with lock:
                errors.append(repr(e))
            c.close()
            c = connect()
        w = max(w, (time.time() - t) * 1000)
        think = args.think_ms * (random.random() if args.random_think else 1.0)
        time.sleep(think / 1000)
        if random.random() < args.reconnect:
            c.close()
            c = connect()
    worst[i] = round(w, 1)


threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
t0 = time.time()
for t in threads:
    t.start()
for t in threads:
    t.join()
print("worst ms per client:", " ".join(str(worst[i]) for i in sorted(worst)))
print(f"answered {answered[0]}, errors {len(errors)} {errors[:3]}, worst {max(worst.values())} ms, "
      f"wall {time.time() - t0:.1f} s")
