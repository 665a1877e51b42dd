#!/usr/bin/env python3
"""RunConvert's AWS deployment on one machine, function by function.

What `sam deploy` makes, played by local parts, all read from template.yaml:
- moto: DynamoDB, S3, SQS, SSM and Step Functions, which executes the state machine's
  definition (its DefinitionSubstitutions resolved) and sends its Lambda invocations to
  the front (moto's MOTO_PORT);
- the front: passes every AWS request on to moto, but answers Lambda's Invoke API
  itself, and watches what passes to play the bucket's EventBridge notifications (an
  object created by a form POST or a PUT) and Step Functions' execution status events;
- a Lambda emulator per function: each function runs as its own processes, the binary
  `sam build` packages for it, speaking the Runtime API (the real lambda_runtime loop)
  to a server of this program; an instance takes one invocation at a time, more are
  started when all are busy; the function's Timeout is enforced by killing the process;
  a process that dies mid-invocation is answered as Lambda answers (Runtime.ExitError);
  zip functions get no conversion tool on PATH, image functions run as a non-root user;
- API Gateway (HTTP API): every request becomes a payload 2.0 event for the API
  function, with the 30 s integration timeout and the 10 MB / 6 MB payload limits;
- the SQS event source mappings: each queue polled with the mapping's batch size, the
  messages a function reports in batchItemFailures left for redelivery;
- EventBridge rules of the template (EventBridgeRule events): patterns matched, the
  target invoked asynchronously with retries.

Prints `API <url>`, `KEY <api key>`, `KEY2` (a second user's), `BUCKET`, `TABLE`,
`FRONT` (the AWS endpoint: moto behind the front), then `READY`; stops
everything it started on SIGINT or SIGTERM. `GET <front>/_stack/stats` answers what the
stack counted (invocations, billed milliseconds and memory per function, init times,
state transitions, DynamoDB/S3/SQS requests), for infra/cost.py; `POST
<front>/_stack/cold/<function>` stops the function's idle instances, so that the next
invocation starts one cold (cost.py times the API's init that way).
"""

import argparse
import base64
import datetime
import http.server
import json
import math
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import boto3
import yaml

ACCOUNT = "123456789012"
REGION = "us-east-1"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Limits of the services played here (AWS's documented quotas).
API_TIMEOUT = 30.0  # HTTP API integration timeout
API_MAX_REQUEST = 10 * 1024 * 1024  # HTTP API payload
SYNC_MAX_PAYLOAD = 6 * 1024 * 1024  # Lambda synchronous request and response
ASYNC_MAX_PAYLOAD = 256 * 1024  # Lambda asynchronous invocation (EventBridge targets)
INIT_TIMEOUT = 10.0  # Lambda's init phase


def log(*a):
    print("[local-stack]", *a, file=sys.stderr, flush=True)


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STOPPING = threading.Event()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # A client that went away (a killed function, a test that is done) is no news.
        err = sys.exc_info()[1]
        if STOPPING.is_set() or isinstance(err, (ConnectionError, BrokenPipeError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # An answer's headers and body are two writes: with Nagle's algorithm the body waits
    # for the client's delayed ACK (40 ms), which no AWS endpoint adds to a request.
    disable_nagle_algorithm = True

    def log_message(self, *a):
        pass

    def body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def answer(self, status, body=b"", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = list(headers) + [("content-type", "application/json")]
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


# --- the template ------------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    pass


def _intrinsic(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Fn::" + suffix: value}


CfnLoader.add_multi_constructor("!", _intrinsic)


class Template:
    """template.yaml with its references resolved to the local resources."""

    def __init__(self, path, stack, params, api_url):
        with open(path) as f:
            self.doc = yaml.load(f, Loader=CfnLoader)
        self.stack = stack
        self.api_url = api_url
        self.params = {k: str(v.get("Default", "")) for k, v in self.doc.get("Parameters", {}).items()}
        self.params.update(params)
        self.resources = self.doc["Resources"]
        self.globals = self.doc.get("Globals", {}).get("Function", {})
        # The physical names of what this stack creates (what CloudFormation would name).
        self.names = {}
        for lid, r in self.resources.items():
            t = r["Type"]
            props = r.get("Properties", {})
            if t == "AWS::Serverless::Function":
                self.names[lid] = f"{stack}-{lid}"
            elif t == "AWS::Serverless::StateMachine":
                self.names[lid] = self.resolve(props.get("Name")) if props.get("Name") else f"{stack}-{lid}"
            elif t in ("AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SQS::Queue"):
                self.names[lid] = f"{stack}-{lid}".lower()
                if props.get("FifoQueue"):
                    self.names[lid] += ".fifo"
            elif t == "AWS::SSM::Parameter":
                self.names[lid] = self.resolve(props.get("Name")) if props.get("Name") else f"/{stack}/{lid}"
            else:
                self.names[lid] = f"{stack}-{lid}"

    def typ(self, lid):
        return self.resources[lid]["Type"]

    def ref(self, name):
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::StackName": self.stack,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": None,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.params:
            return self.params[name]
        t = self.typ(name)
        if t == "AWS::SQS::Queue":
            return f"{FRONT_URL[0]}/{ACCOUNT}/{self.names[name]}"
        if t == "AWS::Serverless::StateMachine":
            return self.getatt(name, "Arn")
        if t == "AWS::Serverless::HttpApi":
            return "localapi"
        return self.names[name]

    def getatt(self, lid, attr):
        t, n = self.typ(lid), self.names[lid]
        if attr == "Arn":
            return {
                "AWS::Serverless::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{n}",
                "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{n}",
                "AWS::S3::Bucket": f"arn:aws:s3:::{n}",
                "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{n}",
                "AWS::Serverless::StateMachine": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{n}",
            }.get(t, f"arn:aws:local:::{n}")
        if attr == "QueueName":
            return n
        if attr == "QueueUrl":
            return self.ref(lid)
        if attr == "Name":
            return n
        raise KeyError(f"GetAtt {lid}.{attr} is not played by the local stack")

    def resolve(self, v):
        if isinstance(v, list):
            return [self.resolve(x) for x in v]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, x), = v.items()
            if k == "Ref":
                return self.ref(x)
            if k == "Fn::GetAtt":
                return self.getatt(x[0], x[1])
            if k == "Fn::Sub":
                text, extra = (x, {}) if isinstance(x, str) else (x[0], self.resolve(x[1]))
                def sub(m):
                    name = m.group(1)
                    if name in extra:
                        return str(extra[name])
                    if "." in name and not name.startswith("AWS::"):
                        a, b = name.split(".", 1)
                        return str(self.getatt(a, b))
                    return str(self.ref(name))
                out = re.sub(r"\$\{([^}!]+)\}", sub, text)
                # The HTTP API's URL is this stack's API Gateway.
                return out.replace(f"https://localapi.execute-api.{REGION}.amazonaws.com", self.api_url)
            if k == "Fn::Join":
                return x[0].join(str(p) for p in self.resolve(x[1]))
        return {k: self.resolve(x) for k, x in v.items()}

    def of_type(self, t):
        return [(lid, r) for lid, r in self.resources.items() if r["Type"] == t]


FRONT_URL = [""]


# --- counters ------------------------------------------------------------------------------


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.functions = {}
        self.requests = {}  # "dynamodb.PutItem" -> n
        self.transitions = 0  # of standard executions (billed per transition)
        self.express = {"executions": 0, "billed_ms": 0}  # billed per 100 ms at 64 MB
        self.executions = {}  # state machine name -> executions started
        # AWS requests each function made (its AWS_SDK_UA_APP_ID is its logical id, in the
        # user agent), and the milliseconds it waited for their answers here.
        self.calls = {}  # logical id -> {"requests": n, "ms": total}

    def fn(self, name, memory):
        with self.lock:
            return self.functions.setdefault(
                name, {"memory_mb": memory, "invocations": 0, "billed_ms": 0, "errors": 0, "inits": []}
            )

    def count(self, key, n=1):
        with self.lock:
            self.requests[key] = self.requests.get(key, 0) + n

    def call(self, caller, ms):
        with self.lock:
            c = self.calls.setdefault(caller, {"requests": 0, "ms": 0.0})
            c["requests"] += 1
            c["ms"] += ms

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps({"functions": self.functions, "requests": self.requests,
                                          "state_transitions": self.transitions, "express": self.express,
                                          "executions": self.executions, "calls": self.calls}))


STATS = Stats()


# --- Lambda ---------------------------------------------------------------------------------


class Invocation:
    def __init__(self, payload, deadline_s):
        self.id = str(uuid.uuid4())
        self.payload = payload
        self.deadline_s = deadline_s
        self.done = threading.Event()
        self.result = None  # ("ok", bytes) or ("error", {"errorType", "errorMessage"})
        self.started = None


class Instance:
    """One process of a function, with its own Runtime API endpoint."""

    def __init__(self, fn):
        self.fn = fn
        self.lock = threading.Condition()
        self.pending = None  # the invocation handed to the next /next
        self.current = None
        self.spawned = None  # when the process was started: its init is timed from there
        self.ready = threading.Event()  # the process asked for work at least once
        self.busy = False
        self.dead = False
        self.killed = False
        self.server = Server(("127.0.0.1", 0), self.handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        port = self.server.server_address[1]
        env = dict(fn.env)
        # Short: Chromium puts a Unix socket (at most 108 bytes of path) under TMPDIR, which
        # is /tmp on Lambda.
        self.tmp = os.path.join(fn.stack.state, "tmp", str(port))
        os.makedirs(self.tmp, exist_ok=True)
        env.update({
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
            # Tags the function's AWS requests (the SDK puts it in the user agent), so the
            # front counts them per function.
            "AWS_SDK_UA_APP_ID": fn.logical[:50],
            "TMPDIR": self.tmp,
            "HOME": self.tmp,
        })
        kw = {}
        if fn.user is not None:
            pw = pwd.getpwnam(fn.user)
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
            os.chmod(self.tmp, 0o700)
            kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self.spawned = time.monotonic()
        self.proc = subprocess.Popen(
            [fn.binary], env=env, cwd=self.tmp, stdin=subprocess.DEVNULL, stdout=fn.stack.logfile(fn.logical),
            stderr=subprocess.STDOUT, start_new_session=True, **kw)
        threading.Thread(target=self.reap, daemon=True).start()

    def reap(self):
        self.proc.wait()
        with self.lock:
            self.dead = True
            self.lock.notify_all()
        self.fn.forget(self)
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def kill(self):
        self.killed = True
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def handler(inst):
        class H(Quiet):
            def do_GET(self):
                if self.path != "/2018-06-01/runtime/invocation/next":
                    return self.answer(404, {"errorMessage": "unknown path"})
                if not inst.ready.is_set():
                    init_ms = (time.monotonic() - inst.spawned) * 1000
                    inst.fn.record_init(init_ms)
                    inst.ready.set()
                with inst.lock:
                    inst.busy = False
                    inst.current = None
                    inst.lock.notify_all()
                    while inst.pending is None and not inst.dead:
                        inst.lock.wait(1)
                    if inst.dead:
                        return
                    inv, inst.pending = inst.pending, None
                    inst.current = inv
                    inv.started = time.monotonic()
                deadline_ms = int((time.time() + inv.deadline_s) * 1000)
                self.answer(200, inv.payload, [
                    ("content-type", "application/json"),
                    ("Lambda-Runtime-Aws-Request-Id", inv.id),
                    ("Lambda-Runtime-Deadline-Ms", str(deadline_ms)),
                    ("Lambda-Runtime-Invoked-Function-Arn", inst.fn.arn),
                    ("Lambda-Runtime-Trace-Id", f"Root=1-{secrets.token_hex(4)}-{secrets.token_hex(12)}"),
                ])

            def do_POST(self):
                body = self.body()
                m = re.fullmatch(r"/2018-06-01/runtime/invocation/([^/]+)/(response|error)", self.path)
                if self.path == "/2018-06-01/runtime/init/error":
                    log(f"{inst.fn.logical}: init error: {body[:500]!r}")
                    self.answer(202, {"status": "OK"})
                    inst.kill()
                    return
                if not m:
                    return self.answer(404, {"errorMessage": "unknown path"})
                inv = inst.current
                if inv is None or inv.id != m.group(1):
                    return self.answer(400, {"errorMessage": "not the current invocation"})
                if m.group(2) == "response":
                    if len(body) > SYNC_MAX_PAYLOAD:
                        inv.result = ("error", {"errorType": "Function.ResponseSizeTooLarge",
                                                "errorMessage": "Response payload size exceeded maximum allowed payload size (6291556 bytes)."})
                    else:
                        inv.result = ("ok", body)
                else:
                    try:
                        err = json.loads(body or b"{}")
                    except ValueError:
                        err = {"errorType": "Unhandled", "errorMessage": body.decode("utf-8", "replace")}
                    inv.result = ("error", err)
                inv.done.set()
                self.answer(202, {"status": "OK"})
        return H

    def give(self, inv):
        with self.lock:
            self.pending = inv
            self.busy = True
            self.lock.notify_all()


class Function:
    def __init__(self, stack, logical, props, binary, env, user):
        self.stack = stack
        self.logical = logical
        self.name = stack.template.names[logical]
        self.arn = stack.template.getatt(logical, "Arn")
        self.memory = int(props.get("MemorySize", stack.template.globals.get("MemorySize", 128)))
        self.timeout = float(props.get("Timeout", stack.template.globals.get("Timeout", 3)))
        self.binary = binary
        self.env = env
        self.user = user
        self.lock = threading.Condition()
        self.instances = []
        self.idle = []
        self.max_instances = 8
        self.timeout_override = None
        self.stats = STATS.fn(self.name, self.memory)

    def record_init(self, ms):
        with STATS.lock:
            self.stats["inits"].append(round(ms, 2))

    def forget(self, inst):
        with self.lock:
            if inst in self.instances:
                self.instances.remove(inst)
            if inst in self.idle:
                self.idle.remove(inst)
            self.lock.notify_all()

    def acquire(self):
        with self.lock:
            while True:
                while self.idle:
                    inst = self.idle.pop()
                    if not (inst.dead or inst.killed):
                        return inst
                if len(self.instances) < self.max_instances:
                    inst = Instance(self)
                    self.instances.append(inst)
                    return inst
                self.lock.wait(0.5)

    def retire_idle(self):
        """Stops the instances waiting for work, so the next invocation starts cold."""
        with self.lock:
            idle, self.idle = self.idle, []
        for inst in idle:
            inst.kill()
        return len(idle)

    def release(self, inst):
        with self.lock:
            if not (inst.dead or inst.killed):
                self.idle.append(inst)
            self.lock.notify_all()

    def invoke(self, payload, asynchronous=False):
        """Runs one invocation; returns (ok, body bytes or error dict)."""
        limit = ASYNC_MAX_PAYLOAD if asynchronous else SYNC_MAX_PAYLOAD
        if len(payload) > limit:
            return False, {"errorType": "RequestEntityTooLargeException",
                           "errorMessage": f"Request must be smaller than {limit} bytes for the InvokeFunction operation"}, 413
        fault = self.stack.fault_for(self, payload)
        timeout = self.timeout_override or self.timeout
        if fault and fault[0] == "timeout":
            timeout = float(fault[1])
        inst = self.acquire()
        if not inst.ready.wait(INIT_TIMEOUT) or inst.dead:
            inst.kill()
            with STATS.lock:
                self.stats["errors"] += 1
            return False, {"errorType": "Runtime.InitError" if not inst.dead else "Runtime.ExitError",
                           "errorMessage": "the function did not start"}, 200
        inv = Invocation(payload, timeout)
        inv.started = time.monotonic()
        if fault and fault[0] == "kill" and float(fault[1]) <= 0:
            # Dies as it takes the event: none of the invocation runs, however loaded the
            # machine (a timer of 0 s could lose the race to a quick step).
            inst.kill()
        inst.give(inv)
        if fault and fault[0] == "kill" and float(fault[1]) > 0:
            # Killed mid-task, as an out-of-memory kill or a host failure would.
            threading.Timer(float(fault[1]), inst.kill).start()
        deadline = time.monotonic() + timeout
        result = None
        while not inv.done.wait(0.02):
            if inst.dead:
                result = ("error", {"errorType": "Runtime.ExitError",
                                    "errorMessage": f"RequestId: {inv.id} Error: Runtime exited with error: signal: killed"})
                break
            if time.monotonic() > deadline:
                inst.kill()
                result = ("error", {"errorType": "Sandbox.Timedout",
                                    "errorMessage": f"RequestId: {inv.id} Error: Task timed out after {timeout:.2f} seconds"})
                break
        if result is None:
            result = inv.result
        elapsed_ms = (time.monotonic() - inv.started) * 1000
        with STATS.lock:
            self.stats["invocations"] += 1
            self.stats["billed_ms"] += int(elapsed_ms) + 1
            if result[0] == "error":
                self.stats["errors"] += 1
        self.release(inst)
        if result[0] == "ok":
            return True, result[1], 200
        return False, result[1], 200



# --- the stack ---------------------------------------------------------------------------------


class Stack:
    def __init__(self, args):
        self.args = args
        self.state = os.path.abspath(args.state)
        os.makedirs(os.path.join(self.state, "logs"), exist_ok=True)
        os.makedirs(os.path.join(self.state, "tmp"), exist_ok=True)
        self.stack = f"rc{os.getpid()}"
        self.children = []
        self.functions = {}
        self.faults = []
        self.executions = {}  # arn -> {"input", "machine", "status"}
        self.machine_types = {}  # state machine arn -> STANDARD or EXPRESS
        self.exec_lock = threading.Lock()
        self.rules = []  # (pattern, Function)
        self.s3_events = set()  # buckets with EventBridge notifications
        self.logs = {}

    def logfile(self, name):
        if name not in self.logs:
            self.logs[name] = open(os.path.join(self.state, "logs", f"{name}.log"), "ab")
        return self.logs[name]

    # -- faults (tests only): FUNCTION=kill:SECONDS@TAG, FUNCTION=timeout:SECONDS@TAG,
    #    StartExecution=refuse@TAG; TAG is the job's tag, the task's name or step:<step of
    #    the job function>, or several joined by '+' (all must hold).
    def fault_for(self, fn, payload):
        if not self.faults:
            return None
        try:
            p = json.loads(payload)
        except ValueError:
            return None
        names = self.labels(p) if isinstance(p, dict) else set()
        for target, action, arg, tag in self.faults:
            if target == fn.logical and set(tag.split("+")) <= names:
                return (action, arg)
        return None

    def labels(self, p):
        """The job tag and task name an invocation is about."""
        out = {f"step:{p['step']}"} if isinstance(p.get("step"), str) else set()
        ddb = self.client("dynamodb")
        job_id, task_id = p.get("job_id"), p.get("task_id")
        try:
            if job_id:
                it = ddb.get_item(TableName=self.table, Key={"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "#JOB"}}).get("Item")
                if it:
                    out.add(json.loads(it["data"]["S"]).get("tag"))
            if task_id:
                q = ddb.query(TableName=self.table, IndexName="gsi2", KeyConditionExpression="gsi2pk = :k",
                              ExpressionAttributeValues={":k": {"S": f"TASK#{task_id}"}})
                for k in q.get("Items", []):
                    it = ddb.get_item(TableName=self.table, Key={"pk": k["pk"], "sk": k["sk"]}).get("Item")
                    if it:
                        out.add(json.loads(it["data"]["S"]).get("name"))
        except Exception as e:  # noqa: BLE001 - a fault lookup never stops the stack
            log(f"fault lookup: {e}")
        return out

    def client(self, service):
        return boto3.client(service, endpoint_url=self.moto, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def start(self):
        a = self.args
        self.front_port = a.front_port or free_port()
        self.api_port = a.api_port or free_port()
        FRONT_URL[0] = f"http://127.0.0.1:{self.front_port}"
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        params = {"AllowPrivateNetworks": "true" if a.allow_private_networks else "false"}
        for p in a.parameter:
            k, _, v = p.partition("=")
            params[k] = v
        if a.upload_timeout:
            params["UploadTimeoutSeconds"] = str(a.upload_timeout)
        self.template = Template(a.template, self.stack, params, self.api_url)
        self.start_moto()
        self.start_front()
        self.create_resources()
        self.start_functions()
        self.start_api()
        self.start_pollers()
        key, other = self.make_key("local"), self.make_key("other")
        print(f"API {self.api_url}")
        print(f"KEY {key}")
        # A second user's key, for tests that one user never sees another's jobs.
        print(f"KEY2 {other}")
        print(f"BUCKET {self.bucket}")
        print(f"TABLE {self.table}")
        print(f"FRONT {FRONT_URL[0]}")
        print("READY", flush=True)

    def start_moto(self):
        port = free_port()
        self.moto = f"http://127.0.0.1:{port}"
        env = dict(os.environ, MOTO_PORT=str(self.front_port))
        moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
        p = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], env=env, stdin=subprocess.DEVNULL,
                             stdout=self.logfile("moto"), stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append(p)
        for _ in range(300):
            try:
                urllib.request.urlopen(self.moto + "/moto-api/", timeout=1)
                break
            except Exception:  # noqa: BLE001
                time.sleep(0.1)
        else:
            raise SystemExit("moto did not start")
        req = urllib.request.Request(
            self.moto + "/moto-api/config", method="POST",
            data=json.dumps({"stepfunctions": {"execute_state_machine": True},
                             "lambda": {"use_docker": False}}).encode(),
            headers={"content-type": "application/json"})
        urllib.request.urlopen(req, timeout=5)

    def start_front(self):
        self.front = Server(("127.0.0.1", self.front_port), front_handler(self))
        threading.Thread(target=self.front.serve_forever, daemon=True).start()

    def create_resources(self):
        t = self.template
        for lid, r in t.of_type("AWS::DynamoDB::Table"):
            p = t.resolve(r["Properties"])
            self.table = t.names[lid]
            kw = {k: p[k] for k in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes") if k in p}
            self.client("dynamodb").create_table(TableName=self.table, BillingMode="PAY_PER_REQUEST", **kw)
        for lid, r in t.of_type("AWS::S3::Bucket"):
            p = t.resolve(r.get("Properties", {}))
            self.bucket = t.names[lid]
            s3 = self.client("s3")
            s3.create_bucket(Bucket=self.bucket)
            if p.get("CorsConfiguration"):
                # CloudFormation's names for the S3 API's.
                rules = [{"AllowedMethods": r["AllowedMethods"], "AllowedOrigins": r["AllowedOrigins"],
                          "AllowedHeaders": r.get("AllowedHeaders", []), "ExposeHeaders": r.get("ExposedHeaders", []),
                          "MaxAgeSeconds": int(r.get("MaxAge", 0))} for r in p["CorsConfiguration"]["CorsRules"]]
                s3.put_bucket_cors(Bucket=self.bucket, CORSConfiguration={"CORSRules": rules})
            if p.get("NotificationConfiguration", {}).get("EventBridgeConfiguration", {}).get("EventBridgeEnabled"):
                self.s3_events.add(self.bucket)
        # Dead-letter queues first: the others name them.
        queues = sorted(t.of_type("AWS::SQS::Queue"), key=lambda q: "RedrivePolicy" in q[1].get("Properties", {}))
        for lid, r in queues:
            p = t.resolve(r.get("Properties", {}))
            attrs = {}
            for k in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds"):
                if k in p:
                    attrs[k] = str(p[k])
            for k in ("FifoQueue", "ContentBasedDeduplication"):
                if p.get(k):
                    attrs[k] = "true"
            if "RedrivePolicy" in p:
                attrs["RedrivePolicy"] = json.dumps(p["RedrivePolicy"])
            self.client("sqs").create_queue(QueueName=t.names[lid], Attributes=attrs)
        # What a user does before the first deploy (CloudFormation cannot make a
        # SecureString): the sealing key, in SSM, where only the functions given its name
        # read it.
        key_name = "/" + t.params["SealingKeyParameter"]
        self.client("ssm").put_parameter(Name=key_name, Value=secrets.token_hex(32), Type="SecureString")
        for lid, r in t.of_type("AWS::SSM::Parameter"):
            p = t.resolve(r["Properties"])
            self.client("ssm").put_parameter(Name=t.names[lid], Value=str(p["Value"]), Type=p.get("Type", "String"))
        for lid, r in t.of_type("AWS::Serverless::StateMachine"):
            p = r["Properties"]
            with open(os.path.join(ROOT, p["DefinitionUri"])) as f:
                definition = f.read()
            for k, v in t.resolve(p.get("DefinitionSubstitutions", {})).items():
                definition = definition.replace("${" + k + "}", str(v))
            out = self.client("stepfunctions").create_state_machine(
                name=t.names[lid], definition=definition, type=p.get("Type", "STANDARD"),
                roleArn=f"arn:aws:iam::{ACCOUNT}:role/{self.stack}-states")
            self.machine_types[out["stateMachineArn"]] = p.get("Type", "STANDARD")

    def start_functions(self):
        t = self.template
        empty = os.path.join(self.state, "no-tools")
        os.makedirs(empty, exist_ok=True)
        genv = t.resolve(t.globals.get("Environment", {}).get("Variables", {}))
        for lid, r in t.of_type("AWS::Serverless::Function"):
            props = r["Properties"]
            env = dict(genv)
            env.update(t.resolve(props.get("Environment", {}).get("Variables", {})))
            env = {k: str(v) for k, v in env.items() if v is not None}
            memory = int(props.get("MemorySize", t.globals.get("MemorySize", 128)))
            image = props.get("PackageType") == "Image"
            if image:
                entry = props["ImageConfig"]["EntryPoint"][0]
                binary = self.image_binary(r, entry)
                path = "/usr/local/bin:/usr/bin:/bin"
                user = self.args.image_user
            else:
                binary = os.path.join(self.args.bin_dir, r["Metadata"]["BuildProperties"]["Binary"])
                path = empty
                user = None
            if not os.access(binary, os.X_OK):
                raise SystemExit(f"{lid}: no binary at {binary} (build it: cargo build -p runconvert-aws -p runconvert-aws-engine -p runconvert-aws-transfer --bins)")
            env.update({
                "PATH": path,
                "AWS_ENDPOINT_URL": FRONT_URL[0],
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_LAMBDA_FUNCTION_NAME": t.names[lid],
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{t.names[lid]}",
                "LAMBDA_TASK_ROOT": os.path.dirname(binary),
                "LANG": "C.UTF-8",
            })
            for k in ("RUNCONVERT_LOG",):
                if k in os.environ:
                    env[k] = os.environ[k]
            fn = Function(self, lid, props, binary, env, user)
            self.functions[lid] = fn
            for ev in props.get("Events", {}).values():
                if ev["Type"] == "EventBridgeRule":
                    self.rules.append((t.resolve(ev["Properties"]["Pattern"]), fn))

    def image_binary(self, r, entry):
        # The image's entry point is the worker binary (infra/worker.Dockerfile).
        name = {"/usr/local/bin/runconvert-worker": "worker"}.get(entry, os.path.basename(entry))
        return os.path.join(self.args.bin_dir, name)

    def function_by_name(self, name):
        name = urllib.parse.unquote(name).split(":")
        for fn in self.functions.values():
            if fn.name in name or fn.logical in name:
                return fn
        return None

    def start_api(self):
        fns = [self.functions[lid] for lid, r in self.template.of_type("AWS::Serverless::Function")
               if any(e["Type"] == "HttpApi" for e in r["Properties"].get("Events", {}).values())]
        if len(fns) != 1:
            raise SystemExit("the template should route its HTTP API to one function")
        self.api = Server(("127.0.0.1", self.api_port), api_handler(fns[0]))
        threading.Thread(target=self.api.serve_forever, daemon=True).start()

    def start_pollers(self):
        for lid, r in self.template.of_type("AWS::Serverless::Function"):
            for ev in r["Properties"].get("Events", {}).values():
                if ev["Type"] == "SQS":
                    p = self.template.resolve(ev["Properties"])
                    queue = p["Queue"].rsplit(":", 1)[1]
                    threading.Thread(target=self.poll_queue, args=(self.functions[lid], queue, p), daemon=True).start()
        threading.Thread(target=self.watch_executions, daemon=True).start()

    def poll_queue(self, fn, queue, p):
        sqs = self.client("sqs")
        url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}"
        batch = int(p.get("BatchSize", 10))
        partial = "ReportBatchItemFailures" in p.get("FunctionResponseTypes", [])
        while True:
            try:
                got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=min(batch, 10), WaitTimeSeconds=1,
                                          AttributeNames=["All"], MessageAttributeNames=["All"])
                # An empty poll is the idle cost of a mapping (AWS's long-polls, a few a
                # minute per queue whatever the traffic), not a job's: counted apart.
                STATS.count("sqs.ReceiveMessage" if got.get("Messages") else "idle.sqs.ReceiveMessage")
            except Exception as e:  # noqa: BLE001
                if STOPPING.is_set():
                    return
                log(f"poll {queue}: {e}")
                time.sleep(1)
                continue
            msgs = got.get("Messages", [])
            if not msgs:
                continue

            records = [{
                "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": REGION,
            } for m in msgs]
            ok, out, _ = fn.invoke(json.dumps({"Records": records}).encode())
            keep = set()
            if not ok:
                keep = {m["MessageId"] for m in msgs}
            elif partial:
                try:
                    keep = {f["itemIdentifier"] for f in json.loads(out or b"{}").get("batchItemFailures", [])}
                except ValueError:
                    keep = {m["MessageId"] for m in msgs}
            done = [m for m in msgs if m["MessageId"] not in keep]
            if done:
                sqs.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
                STATS.count("sqs.DeleteMessageBatch")

    # -- EventBridge --------------------------------------------------------------------------

    def emit(self, source, detail_type, resources, detail):
        event = {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": source,
                 "account": ACCOUNT, "time": now_iso(), "region": REGION, "resources": resources, "detail": detail}
        for pattern, fn in self.rules:
            if matches(pattern, event):
                threading.Thread(target=self.deliver_event, args=(fn, event), daemon=True).start()

    def deliver_event(self, fn, event):
        body = json.dumps(event).encode()
        # EventBridge invokes asynchronously; Lambda retries a failed async invocation twice.
        for attempt in range(3):
            ok, out, _ = fn.invoke(body, asynchronous=True)
            if ok:
                return
            log(f"{fn.logical}: event {event['detail-type']} failed ({out}); attempt {attempt + 1}")
            time.sleep(1 + attempt)

    def watch_executions(self):
        sfn = self.client("stepfunctions")
        while True:
            time.sleep(0.5)
            with self.exec_lock:
                running = [(arn, e) for arn, e in self.executions.items() if e["status"] == "RUNNING"]
            for arn, e in running:
                try:
                    d = sfn.describe_execution(executionArn=arn)
                except Exception:  # noqa: BLE001
                    continue
                if d["status"] == "RUNNING":
                    continue
                e["status"] = d["status"]
                if self.machine_types.get(e["machine"]) == "EXPRESS":
                    # Billed by duration (per 100 ms); no status events (the watchdog's job).
                    ms = (d["stopDate"] - d["startDate"]).total_seconds() * 1000 if d.get("stopDate") else 0
                    with STATS.lock:
                        STATS.express["executions"] += 1
                        STATS.express["billed_ms"] += math.ceil(ms / 100) * 100
                    continue
                try:
                    hist = sfn.get_execution_history(executionArn=arn, maxResults=1000)
                    n = sum(1 for ev in hist["events"] if ev["type"].endswith("StateEntered"))
                    with STATS.lock:
                        STATS.transitions += n
                except Exception:  # noqa: BLE001
                    pass
                self.emit("aws.states", "Step Functions Execution Status Change", [arn], {
                    "executionArn": arn, "stateMachineArn": e["machine"], "name": arn.rsplit(":", 1)[1],
                    "status": d["status"], "input": e["input"], "output": d.get("output"),
                    "startDate": int(d["startDate"].timestamp() * 1000),
                    "stopDate": int(d["stopDate"].timestamp() * 1000) if d.get("stopDate") else None,
                })

    def make_key(self, name):
        admin = os.path.join(self.args.bin_dir, "runconvert-aws")
        env = dict(os.environ, AWS_ENDPOINT_URL=FRONT_URL[0], AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing", AWS_REGION=REGION, TABLE_NAME=self.table)
        out = subprocess.run([admin, "keys", "create", "--name", name], env=env, capture_output=True,
                             text=True, timeout=60)
        if out.returncode != 0:
            raise SystemExit(f"runconvert-aws keys create: {out.stderr}")
        return out.stdout.strip().splitlines()[-1]

    def stop(self):
        STOPPING.set()
        # No locks here: a signal may come while any thread holds one.
        for fn in list(self.functions.values()):
            for inst in list(fn.instances):
                inst.kill()
        for p in self.children:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.children:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        if self.args.stats:
            with open(self.args.stats, "w") as f:
                json.dump(STATS.snapshot(), f, indent=1)


def matches(pattern, event):
    """An EventBridge pattern: every key must match; a list is a set of alternatives."""
    for k, want in pattern.items():
        have = event.get(k) if isinstance(event, dict) else None
        if isinstance(want, dict):
            if not isinstance(have, dict) or not matches(want, have):
                return False
            continue
        alts = want if isinstance(want, list) else [want]
        ok = False
        for alt in alts:
            if isinstance(alt, dict):
                if "prefix" in alt and isinstance(have, str) and have.startswith(alt["prefix"]):
                    ok = True
                if "suffix" in alt and isinstance(have, str) and have.endswith(alt["suffix"]):
                    ok = True
                if "exists" in alt and (have is not None) == alt["exists"]:
                    ok = True
            elif have == alt or (isinstance(have, list) and alt in have):
                ok = True
        if not ok:
            return False
    return True


# --- the front: AWS APIs ------------------------------------------------------------------------


SERVICE_BY_TARGET = {"DynamoDB_20120810": "dynamodb", "AWSStepFunctions": "states", "AmazonSQS": "sqs",
                     "AmazonSSM": "ssm"}


def front_handler(stack):
    class H(Quiet):
        def handle_any(self):
            body = self.body()
            path = urllib.parse.urlsplit(self.path).path
            if path == "/_stack/stats":
                return self.answer(200, STATS.snapshot())
            m = re.fullmatch(r"/_stack/cold/([^/]+)", path)
            if m and self.command == "POST":
                fn = stack.function_by_name(m.group(1))
                if fn is None:
                    return self.answer(404, {"message": f"no function {m.group(1)}"})
                return self.answer(200, {"retired": fn.retire_idle()})
            m = re.fullmatch(r"/2015-03-31/functions/([^/]+)/invocations", path)
            if m and self.command == "POST":
                return self.invoke(m.group(1), body)
            target = self.headers.get("x-amz-target", "")
            service = SERVICE_BY_TARGET.get(target.split(".")[0])
            if service:
                STATS.count(f"{service}.{target.split('.')[-1]}")
            elif "sqs" in self.headers.get("content-type", "") or "Action=" in self.path:
                STATS.count("sqs.request")
            else:
                STATS.count(f"s3.{self.command}")
            if target == "AWSStepFunctions.StartExecution":
                refused = self.refused_start(body)
                if refused:
                    return self.answer(400, json.dumps(refused).encode(), [("content-type", "application/x-amz-json-1.0")])
            began = time.monotonic()
            status, headers, out = self.forward(body)
            agent = self.headers.get("x-amz-user-agent", "") + " " + self.headers.get("user-agent", "")
            caller = re.search(r"\bapp/([A-Za-z0-9]+)", agent)
            STATS.call(caller.group(1) if caller else "other", (time.monotonic() - began) * 1000)
            if target == "AWSStepFunctions.StartExecution" and status == 200:
                req, res = json.loads(body), json.loads(out)
                with stack.exec_lock:
                    stack.executions[res["executionArn"]] = {"input": req.get("input", "{}"), "status": "RUNNING",
                                                             "machine": req["stateMachineArn"]}
                with STATS.lock:
                    name = req["stateMachineArn"].rsplit(":", 1)[1]
                    STATS.executions[name] = STATS.executions.get(name, 0) + 1
            if service is None and 200 <= status < 300 and self.command in ("POST", "PUT"):
                self.object_created(path, body)
            self.answer(status, out, headers)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any

        def forward(self, body):
            req = urllib.request.Request(stack.moto + self.path, data=body if self.command != "GET" else None,
                                         method=self.command)
            for k, v in self.headers.items():
                if k.lower() not in ("host", "content-length", "connection", "expect"):
                    req.add_header(k, v)
            req.add_header("host", self.headers.get("host", ""))
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    status, hdrs, out = r.status, r.getheaders(), r.read()
            except urllib.error.HTTPError as e:
                status, hdrs, out = e.code, e.headers.items(), e.read()
            keep = [(k, v) for k, v in hdrs if k.lower() not in ("content-length", "transfer-encoding", "connection",
                                                                  "server", "date")]
            return status, keep, out

        def invoke(self, name, body):
            fn = stack.function_by_name(name)
            if fn is None:
                return self.answer(404, {"Type": "User", "Message": f"Function not found: {name}"},
                                   [("x-amzn-ErrorType", "ResourceNotFoundException")])
            asynchronous = self.headers.get("X-Amz-Invocation-Type") == "Event"
            ok, out, status = fn.invoke(body, asynchronous)
            rid = [("x-amzn-RequestId", str(uuid.uuid4())), ("X-Amz-Executed-Version", "$LATEST")]
            if status == 413:
                return self.answer(413, {"Type": "User", "message": out["errorMessage"]},
                                   rid + [("x-amzn-ErrorType", "RequestEntityTooLargeException")])
            if ok:
                return self.answer(202 if asynchronous else 200, out, rid + [("content-type", "application/json")])
            return self.answer(200, out, rid + [("X-Amz-Function-Error", "Unhandled")])

        def refused_start(self, body):
            try:
                inp = json.loads(json.loads(body).get("input") or "{}")
            except ValueError:
                return None
            for target, action, _arg, tag in stack.faults:
                if target == "StartExecution" and action == "refuse" and tag in stack.labels(inp):
                    return {"__type": "com.amazonaws.swf.service.v2.model#ServiceUnavailable",
                            "message": "refused by the local stack (fault injected)"}
            return None

        def object_created(self, path, body):
            parts = path.lstrip("/").split("/", 1)
            bucket = parts[0]
            if bucket not in stack.s3_events:
                return
            if self.command == "PUT" and len(parts) == 2 and "partNumber=" not in self.path:
                key, size = urllib.parse.unquote(parts[1]), len(body)
            elif self.command == "POST" and len(parts) == 1 and "multipart/form-data" in self.headers.get("content-type", ""):
                m = re.search(rb'name="key"\r\n\r\n([^\r]*)\r\n', body)
                f = re.search(rb'name="file"; filename="([^"]*)"', body)
                if not m:
                    return
                key = m.group(1).decode()
                if f:
                    key = key.replace("${filename}", f.group(1).decode())
                size = 0
                try:
                    size = stack.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"]
                except Exception:  # noqa: BLE001
                    return
            elif self.command == "POST" and "uploadId=" in self.path:
                key, size = urllib.parse.unquote(parts[1]) if len(parts) == 2 else "", 0
            else:
                return
            stack.emit("aws.s3", "Object Created", [f"arn:aws:s3:::{bucket}"], {
                "version": "0", "bucket": {"name": bucket}, "object": {"key": key, "size": size},
                "request-id": str(uuid.uuid4()), "requester": ACCOUNT, "reason": "PostObject" if self.command == "POST" else "PutObject",
            })
    return H


# --- API Gateway ---------------------------------------------------------------------------------


def api_handler(fn):
    class H(Quiet):
        def handle_any(self):
            STATS.count("apigateway.request")
            n = int(self.headers.get("content-length") or 0)
            if n > API_MAX_REQUEST:
                self.close_connection = True
                return self.answer(413, {"message": "Request Entity Too Large"})
            body = self.rfile.read(n) if n else b""
            url = urllib.parse.urlsplit(self.path)
            headers = {}
            for k, v in self.headers.items():
                k = k.lower()
                if k == "cookie":
                    continue
                headers[k] = f"{headers[k]},{v}" if k in headers else v
            cookies = [c.strip() for h in self.headers.get_all("cookie") or [] for c in h.split(";") if c.strip()]
            query = {}
            for k, v in urllib.parse.parse_qsl(url.query, keep_blank_values=True):
                query[k] = f"{query[k]},{v}" if k in query else v
            text = headers.get("content-type", "").startswith(("text/", "application/json"))
            try:
                body_text, b64 = (body.decode("utf-8"), False) if text else (base64.b64encode(body).decode(), True)
            except UnicodeDecodeError:
                body_text, b64 = base64.b64encode(body).decode(), True
            t = time.time()
            path = urllib.parse.unquote(url.path)
            event = {
                "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": url.query,
                "headers": headers,
                "requestContext": {
                    "accountId": ACCOUNT, "apiId": "localapi", "domainName": headers.get("host", "localhost"),
                    "domainPrefix": "localapi", "requestId": str(uuid.uuid4()), "routeKey": "$default",
                    "stage": "$default", "time": datetime.datetime.utcnow().strftime("%d/%b/%Y:%H:%M:%S +0000"),
                    "timeEpoch": int(t * 1000),
                    "http": {"method": self.command, "path": path, "protocol": "HTTP/1.1",
                             "sourceIp": self.client_address[0], "userAgent": headers.get("user-agent", "")},
                },
                "isBase64Encoded": b64,
            }
            if cookies:
                event["cookies"] = cookies
            if query:
                event["queryStringParameters"] = query
            if body:
                event["body"] = body_text
            payload = json.dumps(event).encode()
            if len(payload) > SYNC_MAX_PAYLOAD:
                return self.answer(413, {"message": "Request Entity Too Large"})
            box = {}
            done = threading.Event()

            def run():
                box["r"] = fn.invoke(payload)
                done.set()
            threading.Thread(target=run, daemon=True).start()
            if not done.wait(API_TIMEOUT):
                # The function goes on until its own timeout; the client is told now.
                return self.answer(503, {"message": "Service Unavailable"})
            ok, out, _ = box["r"]
            if not ok:
                log(f"API function error: {out}")
                return self.answer(500, {"message": "Internal Server Error"})
            try:
                r = json.loads(out)
            except ValueError:
                return self.answer(500, {"message": "Internal Server Error"})
            if not isinstance(r, dict) or "statusCode" not in r:
                # Payload 2.0: a bare JSON answer is a 200 of that JSON.
                return self.answer(200, out, [("content-type", "application/json")])
            data = r.get("body") or ""
            data = base64.b64decode(data) if r.get("isBase64Encoded") else data.encode()
            hdrs = [(k, v) for k, v in (r.get("headers") or {}).items() if k.lower() not in ("content-length", "connection", "transfer-encoding")]
            for k, vs in (r.get("multiValueHeaders") or {}).items():
                if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                    hdrs += [(k, v) for v in vs]
            hdrs += [("set-cookie", c) for c in r.get("cookies") or []]
            hdrs.append(("apigw-requestid", event["requestContext"]["requestId"]))
            self.answer(int(r["statusCode"]), data, hdrs)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any
    return H


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--template", default=os.path.join(ROOT, "template.yaml"))
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "debug"))
    ap.add_argument("--state", default=os.path.join(ROOT, "target", "local-stack"))
    ap.add_argument("--api-port", type=int, default=0)
    ap.add_argument("--front-port", type=int, default=0)
    ap.add_argument("--allow-private-networks", action="store_true")
    ap.add_argument("--upload-timeout", type=int, default=0)
    ap.add_argument("--parameter", action="append", default=[], help="NAME=VALUE, a template parameter")
    ap.add_argument("--image-user", default="nobody", help="the user image functions run as")
    ap.add_argument("--fault", action="append", default=[],
                    help="tests: FUNCTION=kill:SECONDS@TAG, FUNCTION=timeout:SECONDS@TAG, StartExecution=refuse@TAG")
    ap.add_argument("--stats", help="write what the stack counted to this file when it stops")
    args = ap.parse_args()
    stack = Stack(args)
    for f in args.fault:
        m = re.fullmatch(r"(\w+)=(\w+)(?::([\d.]+))?@(.+)", f)
        if not m:
            raise SystemExit(f"--fault {f}: FUNCTION=ACTION[:SECONDS]@TAG")
        stack.faults.append((m.group(1), m.group(2), m.group(3), m.group(4)))

    def bye(*_):
        # Whatever happens in stop(), the stack is gone within 10 s.
        threading.Timer(10, lambda: os._exit(1)).start()
        stack.stop()
        os._exit(0)
    # The stack stops when whoever started it dies (a test killed mid-way).
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    signal.signal(signal.SIGTERM, bye)
    signal.signal(signal.SIGINT, bye)
    try:
        stack.start()
    except BaseException as e:
        stack.stop()
        raise SystemExit(f"local stack: {e}")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
