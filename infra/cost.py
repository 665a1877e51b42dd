#!/usr/bin/env python3
"""What a job costs on AWS, from what the local stack counted.

Starts the local stack (infra/local/stack.py) and a loopback file server, runs each of
the README's example jobs N times the way a client does (create, /wait, download the
result through its link), and reads the stack's counters before and after: state
transitions, each function's invocations and billed milliseconds at its configured
memory, and the DynamoDB, S3, SQS and API requests that crossed the stack. Prices are
us-east-1 list prices (below, with the date they were read); the result is printed per
1,000 jobs. Last, it times the API function's cold start (process start to its first
request for work from the Runtime API) over several fresh instances on the quiet stack.

    bash infra/cost.sh [--jobs N]

What is approximated: a DynamoDB request counts as one read or write unit (items here
are under 1 KB for reads and writes alike, batch writes count per item); durations are
those of this machine's debug or release build (whichever --bin-dir holds), not of a
Lambda arm64 core; EventBridge events from AWS services are free.
"""

import argparse
import base64
import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.request
import http.server
import functools

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# us-east-1 list prices, read 2026-12-01 (aws.amazon.com/<service>/pricing).
PRICES = {
    "lambda_gb_s_arm64": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    "sfn_standard_transition": 0.025 / 1000,
    "sfn_express_request": 1.00 / 1e6,
    "sfn_express_gb_s": 0.00001667,  # the first 1,000 hours a month; 64 MB the smallest step
    "dynamodb_write": 0.625 / 1e6,
    "dynamodb_read": 0.125 / 1e6,
    "s3_put": 0.005 / 1000,
    "s3_get": 0.0004 / 1000,
    "sqs_request": 0.40 / 1e6,
    "http_api_request": 1.00 / 1e6,
}
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
TARGET = 0.05  # dollars per 1,000 jobs of the first example
COLD_STARTS = 9
INIT_TARGET = 30  # milliseconds, the median
WATCHDOG = 20  # seconds: ExpressWatchdogSeconds of the stack measured


def fetch(url, data=None, key=None, method=None):
    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                 method=method or ("POST" if data is not None else "GET"))
    if key:
        req.add_header("authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=120) as r:
        body = r.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body


def examples(files):
    jpg = f"{files}/images/photo_640x480.jpg"
    return [
        ("640x480 jpg → png → export/url", {"tasks": {
            "import-1": {"operation": "import/url", "url": jpg},
            "convert-1": {"operation": "convert", "input": "import-1", "output_format": "png"},
            "export-1": {"operation": "export/url", "input": "convert-1"}}}),
        ("the same, 400 px wide (README walkthrough)", {"tasks": {
            "import-1": {"operation": "import/url", "url": jpg},
            "convert-1": {"operation": "convert", "input": "import-1", "output_format": "png",
                          "options": {"width": 400}},
            "export-1": {"operation": "export/url", "input": "convert-1"}}}),
        ("import/base64 → thumbnail → export/url", {"tasks": {
            "import-1": {"operation": "import/base64", "filename": "photo.jpg",
                         "file": base64.b64encode(open(os.path.join(ROOT, "target/test-fixtures/images/photo_640x480.jpg"), "rb").read()).decode()},
            "thumb-1": {"operation": "thumbnail", "input": "import-1", "output_format": "jpg",
                        "options": {"width": 128}},
            "export-1": {"operation": "export/url", "input": "thumb-1"}}}),
        ("pdf page 1 → png (tools image) → export/url", {"tasks": {
            "import-1": {"operation": "import/url", "url": f"{files}/pdf/text_20p.pdf"},
            "convert-1": {"operation": "convert", "input": "import-1", "output_format": "png"},
            "export-1": {"operation": "export/url", "input": "convert-1"}}}),
    ]


def run_job(api, key, job):
    created = fetch(f"{api}/v2/process/jobs", job, key)
    jid = created["id"]
    while True:
        done = fetch(f"{api}/v2/process/jobs/{jid}/wait?timeout=25", key=key)
        if done["status"] in ("completed", "failed"):
            break
    if done["status"] != "completed":
        raise SystemExit(f"job failed: {json.dumps(done)[:2000]}")
    for t in done["tasks"]:
        if t["operation"] == "export/url":
            for f in t["result"]["files"]:
                fetch(f["url"])  # through the API's redirect to S3


def cost(before, after, jobs):
    out, usage = {}, {}
    lam_gbs = lam_req = 0.0
    for name, fa in after["functions"].items():
        fb = before["functions"].get(name, {"invocations": 0, "billed_ms": 0})
        inv = fa["invocations"] - fb["invocations"]
        ms = fa["billed_ms"] - fb["billed_ms"]
        if inv:
            lam_req += inv
            gbs = ms / 1000 * fa["memory_mb"] / 1024
            lam_gbs += gbs
            logical = name.split("-", 1)[1]
            ca = after.get("calls", {}).get(logical, {"requests": 0, "ms": 0})
            cb = before.get("calls", {}).get(logical, {"requests": 0, "ms": 0})
            calls, waited = ca["requests"] - cb["requests"], ca["ms"] - cb["ms"]
            usage[logical] = (f"{inv / jobs:.1f} × {ms / max(inv, 1):.0f} ms × {fa['memory_mb']} MB "
                              f"({calls / max(inv, 1):.1f} AWS requests, {waited / max(inv, 1):.0f} ms of it)")
    req = {k: after["requests"].get(k, 0) - before["requests"].get(k, 0) for k in after["requests"]}
    transitions = after["state_transitions"] - before["state_transitions"]
    express = after["express"]["executions"] - before["express"]["executions"]
    express_gbs = (after["express"]["billed_ms"] - before["express"]["billed_ms"]) / 1000 * 64 / 1024
    ddb_w = sum(v for k, v in req.items() if k.startswith("dynamodb.") and k.split(".")[1] in WRITES)
    ddb_r = sum(v for k, v in req.items() if k.startswith("dynamodb.") and k.split(".")[1] not in WRITES)
    s3_put = sum(v for k, v in req.items() if k in ("s3.PUT", "s3.POST", "s3.DELETE"))
    s3_get = sum(v for k, v in req.items() if k in ("s3.GET", "s3.HEAD"))
    sqs = sum(v for k, v in req.items() if k.startswith("sqs."))
    api = req.get("apigateway.request", 0)
    per = 1000 / jobs
    out["Step Functions (standard)"] = (f"{transitions / jobs:.1f} transitions", transitions * per * PRICES["sfn_standard_transition"])
    out["Step Functions (express)"] = (f"{express / jobs:.1f} executions, {express_gbs / jobs:.3f} GB-s",
                                       per * (express * PRICES["sfn_express_request"] + express_gbs * PRICES["sfn_express_gb_s"]))
    out["Lambda compute (arm64)"] = (f"{lam_gbs / jobs:.2f} GB-s", lam_gbs * per * PRICES["lambda_gb_s_arm64"])
    out["Lambda requests"] = (f"{lam_req / jobs:.1f} invocations", lam_req * per * PRICES["lambda_request"])
    out["DynamoDB"] = (f"{ddb_w / jobs:.0f} writes, {ddb_r / jobs:.0f} reads",
                       per * (ddb_w * PRICES["dynamodb_write"] + ddb_r * PRICES["dynamodb_read"]))
    out["S3"] = (f"{s3_put / jobs:.1f} PUT, {s3_get / jobs:.1f} GET",
                 per * (s3_put * PRICES["s3_put"] + s3_get * PRICES["s3_get"]))
    out["SQS"] = (f"{sqs / jobs:.1f} requests", sqs * per * PRICES["sqs_request"])
    out["HTTP API"] = (f"{api / jobs:.1f} requests", api * per * PRICES["http_api_request"])
    return out, usage


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "debug"))
    a = ap.parse_args()
    a.bin_dir = os.path.abspath(a.bin_dir)
    files_dir = os.path.join(ROOT, "target", "test-fixtures")
    class Files(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Files, directory=files_dir)
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    files_url = f"http://127.0.0.1:{files.server_address[1]}"
    # Express executions' watchdog messages come due sooner than on AWS (330 s), so that
    # each job's is counted in its window; still later than any job here runs.
    stack = subprocess.Popen([sys.executable, os.path.join(ROOT, "infra/local/stack.py"), "--allow-private-networks",
                              "--parameter", f"ExpressWatchdogSeconds={WATCHDOG}",
                              "--bin-dir", a.bin_dir, "--state", os.path.join(ROOT, "target", "cost-stack")],
                             stdout=subprocess.PIPE, text=True)
    printed = {}
    for line in stack.stdout:
        line = line.strip()
        if line == "READY":
            break
        k, _, v = line.partition(" ")
        printed[k] = v
    try:
        api, key, front = printed["API"], printed["KEY"], printed["FRONT"]
        rows = []
        for name, job in examples(files_url):
            run_job(api, key, job)  # warm: the first instance of each function starts
            time.sleep(WATCHDOG + 2)  # its watchdog message, before the window
            before = fetch(f"{front}/_stack/stats")
            for _ in range(a.jobs):
                run_job(api, key, job)
            # The last executions' histories, webhook messages and watchdog messages.
            time.sleep(WATCHDOG + 2)
            after = fetch(f"{front}/_stack/stats")
            rows.append((name, *cost(before, after, a.jobs)))
        print(f"Per 1,000 jobs, us-east-1 list prices, {a.jobs} jobs of each after one warm-up, "
              f"binaries of {os.path.relpath(a.bin_dir, ROOT)}:\n")
        for name, lines, usage in rows:
            total = sum(c for _, c in lines.values())
            mark = ""
            if rows[0][0] == name:
                mark = f"   (target ≤ ${TARGET:.2f}: {'met' if total <= TARGET else 'missed'})"
            print(f"## {name}: ${total:.3f} per 1,000 jobs{mark}")
            print("| | per job | $ per 1,000 jobs |\n|---|---|---|")
            for svc, (what, c) in lines.items():
                print(f"| {svc} | {what} | {c:.4f} |")
            print("\nfunctions per job (invocations × billed duration × memory; per invocation, the AWS "
                  "requests it made and how long it waited for them on this stack):")
            for k, v in usage.items():
                print(f"- {k}: {v}")
            print()
        # Cold starts of the API function on a quiet stack: each request below finds no
        # idle instance, so a new process starts (the stack's own start-up, when every
        # function starts at once, is left out).
        api_fn = f"{printed['TABLE'].rsplit('-', 1)[0]}-ApiFunction"
        known = len(fetch(f"{front}/_stack/stats")["functions"][api_fn]["inits"])
        for _ in range(COLD_STARTS):
            fetch(f"{front}/_stack/cold/{api_fn}", {})
            time.sleep(0.5)
            fetch(f"{api}/v2/process/jobs", key=key)
        inits = sorted(fetch(f"{front}/_stack/stats")["functions"][api_fn]["inits"][known:])
        print(f"API function init (process start → first request for work), {len(inits)} cold starts: "
              f"{inits[0]:.1f} ms best, {inits[len(inits) // 2]:.1f} ms median (target ≤ {INIT_TARGET} ms: "
              f"{'met' if inits[len(inits) // 2] <= INIT_TARGET else 'missed'})")
    finally:
        stack.terminate()
        stack.wait(30)
        files.shutdown()


if __name__ == "__main__":
    main()
