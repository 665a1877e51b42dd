#!/usr/bin/env python3
"""The benchmark's API mode: each case as a whole job through the running server, the
way a client runs it (create the job, `/wait` for it, download the result through its
link), beside the reference tool's command, in the same run.

    python3 tests/bench/api.py API_URL KEY CORPUS_URL RUNS CASE...

A CASE is `name|target|theirs seconds|job JSON`, the job's `{corpus}` replaced by
CORPUS_URL (a loopback file server, so the server's import/url reads the corpus the way
it reads any URL). Each job runs once to warm up, then RUNS times; the table shows the
median wall seconds of the whole round trip, and the median from creation to `/wait`
returning, beside the tool's median and the operation task's own time inside the server
(its `started_at` to `ended_at`): what the API adds is the difference.
"""

import datetime
import json
import statistics
import sys
import time
import urllib.request


def call(url, key=None, body=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 method="POST" if body is not None else "GET")
    if key:
        req.add_header("authorization", f"Bearer {key}")
    if body is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=300) as r:
        data = r.read()
    return json.loads(data) if key else data


def seconds(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def run(api, key, job):
    """(whole round trip s, creation → /wait answered s, the operation task's s, bytes
    downloaded)"""
    t0 = time.perf_counter()
    made = call(f"{api}/v2/process/jobs", key, job)
    done = call(f"{api}/v2/process/jobs/{made['id']}/wait?timeout=120", key)
    t1 = time.perf_counter()
    if done["status"] != "completed":
        raise SystemExit(f"job failed: {json.dumps(done)[:1500]}")
    size, op = 0, 0.0
    for t in done["tasks"]:
        if t["operation"] == "export/url":
            for f in t["result"]["files"]:
                size += len(call(f["url"]))
        elif not t["operation"].startswith("import/"):
            op += seconds(t["ended_at"]) - seconds(t["started_at"])
    return time.perf_counter() - t0, t1 - t0, op, size


def main():
    api, key, corpus, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    print("| case (through the API) | ours s | to /wait s | task s | theirs s | ratio | target | ours bytes |")
    print("|---|---|---|---|---|---|---|---|")
    for case in sys.argv[5:]:
        name, target, theirs, job = case.split("|", 3)
        job = json.loads(job.replace("{corpus}", corpus))
        run(api, key, job)  # warm-up
        whole, waited, task, size = [], [], [], 0
        for _ in range(runs):
            w, t, op, size = run(api, key, job)
            whole.append(w)
            waited.append(t)
            task.append(op)
        ours, theirs, target = statistics.median(whole), float(theirs), float(target)
        ratio = ours / theirs if theirs > 0 else 0
        print(f"| {name} | {ours:.3f} | {statistics.median(waited):.3f} | {statistics.median(task):.3f} | "
              f"{theirs:.3f} | {ratio:.2f} | "
              f"≤ {target} ({'met' if ratio <= target else 'MISSED'}) | {size} |")


if __name__ == "__main__":
    main()
