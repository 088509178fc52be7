#!/usr/bin/env python3
"""More kept-alive REST clients than `baton serve` has workers.

    bench/serve_keepalive.py PORT CLIENTS

CLIENTS threads, each with one kept-alive connection (http.client), ask
GET /v2/health/live every 0.2 s, 10 times; prints each client's worst
latency in ms. Start the server first, e.g.
`baton serve --no-grpc --http 127.0.0.1:PORT --threads 2 -q`.
"""
import http.client, time, sys, threading
port=int(sys.argv[1]); n=int(sys.argv[2])
worst={}
def client(i):
    c=http.client.HTTPConnection("127.0.0.1",port,timeout=60)
    w=0
    for k in range(10):
        t=time.time(); c.request("GET","/v2/health/live"); r=c.getresponse(); r.read(); w=max(w,(time.time()-t)*1000)
        time.sleep(0.2)
    worst[i]=round(w,1)
ts=[threading.Thread(target=client,args=(i,)) for i in range(n)]
[t.start() for t in ts]; [t.join() for t in ts]
print(" ".join(str(worst[i]) for i in sorted(worst)))
