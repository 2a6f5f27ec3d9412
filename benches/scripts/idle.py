#!/usr/bin/env python3
"""The CPU an idle node uses, as a function of the records it holds.

    python3 benches/scripts/idle.py RECORDS DATA_DIR DFS_BINARY

Starts `dfs node` on DATA_DIR (loopback, no peers), puts RECORDS small live files through the
API (32 keep-alive clients; 0 reuses what DATA_DIR holds), waits 20 s, then prints the node's
CPU time over the next 60 s as a percentage of one core. Nothing scrapes the metrics meanwhile.
"""
import http.client
import os
import subprocess
import sys
import threading
import time
import urllib.parse

N, D, BIN = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.makedirs(D, exist_ok=True)
node = subprocess.Popen(
    [BIN, "node", "--data-dir", D, "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"],
    stdout=subprocess.DEVNULL,
    stderr=open(D + ".log", "w"),
)
try:
    for _ in range(300):
        if os.path.exists(D + "/api") and os.path.exists(D + "/api-token"):
            break
        time.sleep(0.1)
    time.sleep(0.5)
    url = urllib.parse.urlparse(open(D + "/api").read().strip())
    token = open(D + "/api-token").read().strip()

    def put_some(first, step):
        c = http.client.HTTPConnection(url.hostname, url.port)
        for i in range(first, N, step):
            body = ("file %d" % i).encode() * 8
            c.request(
                "PUT",
                "/v1/files/idle/%07d" % i,
                body=body,
                headers={"Authorization": "Bearer " + token, "Content-Length": str(len(body))},
            )
            r = c.getresponse()
            r.read()
            if r.status >= 300:
                raise SystemExit("put failed: %d" % r.status)

    started = time.time()
    clients = [threading.Thread(target=put_some, args=(k, 32)) for k in range(32)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    print("seeded %d records in %.1f s" % (N, time.time() - started), flush=True)

    def cpu_seconds():
        fields = open("/proc/%d/stat" % node.pid).read().split(")")[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    time.sleep(20)
    a, t0 = cpu_seconds(), time.time()
    time.sleep(60)
    b, t1 = cpu_seconds(), time.time()
    print("idle CPU: %.2f%% of one core over %.0f s" % (100 * (b - a) / (t1 - t0), t1 - t0))
finally:
    node.terminate()
    node.wait()
