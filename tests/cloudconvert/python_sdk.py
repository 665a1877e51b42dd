"""CloudConvert's official Python SDK (PyPI `cloudconvert`, unchanged) against RunConvert.

Also: single tasks (create, wait, cancel, retry, delete) and webhooks signed as
CloudConvert signs them, checked with the SDK's own Webhook.verify.

Run by tests/cloudconvert.rs against the real `runconvert serve` (with
--allow-private-networks, for import/url of a loopback file). The SDK is configured as a
user moving from CloudConvert would: `endpoint=<base>`, `sync_endpoint=<base>/sync`.
Environment: RC_URL, RC_KEY (every scope), RC_PHOTO (a JPEG), RC_FILE_URL (the same
photo over HTTP on loopback). Each check prints `ok - ...`; the first failure exits 1.
"""

import base64
import http.server
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import ok, png_size  # noqa: E402

import cloudconvert
from cloudconvert.exceptions import exceptions

BASE = os.environ["RC_URL"].rstrip("/")
KEY = os.environ["RC_KEY"]
PHOTO = os.environ["RC_PHOTO"]
FILE_URL = os.environ["RC_FILE_URL"]



def configure(key):
    cloudconvert.configure(api_key=key, endpoint=BASE, sync_endpoint=BASE + "/sync")




def download(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read(), r.headers


def exported(job):
    task = next(t for t in job["tasks"] if t["operation"] == "export/url")
    return task["result"]["files"][0]


def text(e):
    """The body of the answer an SDK exception carries."""
    return e.content if isinstance(e.content, str) else e.content.decode()


class Receiver:
    """A webhook receiver on loopback: keeps each delivery's raw body and headers."""

    def __init__(self):
        got = self.got = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                got.append((body.decode("utf-8"), {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def first(self, event, job_id, within=30):
        end = time.time() + within
        while time.time() < end:
            for body, headers in list(self.got):
                v = json.loads(body)
                if v["event"] == event and v["job"]["id"] == job_id:
                    return body, headers
            time.sleep(0.2)
        raise AssertionError(f"no {event} of {job_id} arrived: {len(self.got)} deliveries")


def tasks_on_their_own():
    # Single-task creation (POST /v2/import/url), waited for on the sync API.
    task = cloudconvert.Task.create(operation="import/url", payload={"url": FILE_URL, "filename": "alone.jpg"})
    assert task["operation"] == "import/url" and task["status"] in ("waiting", "processing", "finished"), task
    task = cloudconvert.Task.wait(id=task["id"])
    assert task["status"] == "finished", task
    assert task["result"]["files"][0]["filename"] == "alone.jpg", task
    try:
        cloudconvert.Task.create(operation="convert", payload={"input": task["id"], "output_format": "png"})
        raise AssertionError("a single task with an input was accepted")
    except exceptions.ResourceInvalid as e:
        assert "POST /v2/jobs" in text(e), e.content
    ok("Task.create (POST /v2/import/url) and Task.wait; an input on a single task is refused with 422")

    # Cancel a waiting upload; a second cancel is refused; retry makes a new upload task,
    # which takes the file; a finished task is not retried; delete.
    up = cloudconvert.Task.create(operation="import/upload")
    assert up["status"] == "waiting" and up["result"]["form"]["url"], up
    assert cloudconvert.Task.cancel(id=up["id"]) is True
    up = cloudconvert.Task.find(id=up["id"])
    assert up["status"] == "error" and up["code"] == "cancelled", up
    try:
        cloudconvert.Task.cancel(id=up["id"])
        raise AssertionError("an ended task was cancelled again")
    except exceptions.ResourceInvalid as e:
        assert "has ended already" in text(e), e.content
    again = cloudconvert.Task.retry(id=up["id"])
    assert again["retry_of_task_id"] == up["id"] and again["id"] != up["id"], again
    assert again["operation"] == "import/upload" and again["status"] == "waiting", again
    assert cloudconvert.Task.upload(file_name=PHOTO, task=again) is True
    again = cloudconvert.Task.wait(id=again["id"])
    assert again["status"] == "finished" and again["result"]["files"][0]["size"] == os.path.getsize(PHOTO), again
    try:
        cloudconvert.Task.retry(id=again["id"])
        raise AssertionError("a finished task was retried")
    except exceptions.ResourceInvalid as e:
        assert "only a task that ended with an error" in text(e), e.content
    assert cloudconvert.Task.delete(id=again["id"]) is True
    assert cloudconvert.Task.find(id=again["id"]).get("code") == "not_found"
    ok("Task.cancel (code cancelled; again: 422), Task.retry (a new task takes the upload; "
       "a finished one: 422), Task.delete")

    # A failed step of a chain, retried with the tasks it needs.
    job = cloudconvert.Job.create(payload={"tag": "retry-chain", "tasks": {
        "in": {"operation": "import/base64", "file": base64.b64encode(b"not a photo").decode(),
               "filename": "broken.jpg"},
        "png": {"operation": "convert", "input": "in", "output_format": "png"},
    }})
    job = cloudconvert.Job.wait(id=job["id"])
    failed = next(t for t in job["tasks"] if t["name"] == "png")
    assert job["status"] == "error" and failed["status"] == "error", job
    again = cloudconvert.Task.retry(id=failed["id"])
    assert again["retry_of_task_id"] == failed["id"] and again["job_id"] != job["id"], again
    rerun = cloudconvert.Job.wait(id=again["job_id"])
    assert sorted(t["name"] for t in rerun["tasks"]) == ["in", "png"] and rerun["tag"] == "retry-chain", rerun
    ok("a failed convert retried with its import, in a new job of the same tag")


def webhooks_signed_as_cloudconvert_signs_them():
    client = cloudconvert.default_client()
    hooks = Receiver()
    made = client.post("v2/webhooks", {"url": hooks.url, "events": ["job.finished", "job.failed"]})["data"]
    secret = made["signing_secret"]
    assert made["url"] == hooks.url and secret, made
    listed = client.get("v2/users/me/webhooks?" + urllib.parse.urlencode({"filter[url]": hooks.url}))
    assert [h["id"] for h in listed["data"]] == [made["id"]] and "signing_secret" not in listed["data"][0], listed

    own = Receiver()
    job = cloudconvert.Job.create(payload={"webhook_url": own.url, "tasks": {
        "in": {"operation": "import/url", "url": FILE_URL},
        "out": {"operation": "export/url", "input": "in"},
    }})
    own_secret = job["webhook_secret"]
    job = cloudconvert.Job.wait(id=job["id"])
    assert job["status"] == "finished", job
    for receiver, key in ((hooks, secret), (own, own_secret)):
        body, headers = receiver.first("job.finished", job["id"])
        signature = headers["cloudconvert-signature"]
        assert cloudconvert.Webhook.verify(body, signature, key), "the SDK's verify refused a delivery"
        # Controls: another secret, or a changed body, does not verify.
        assert not cloudconvert.Webhook.verify(body, signature, key + "x")
        assert not cloudconvert.Webhook.verify(body.replace("finished", "finishe"), signature, key)
        assert json.loads(body)["job"]["status"] == "finished", body
    ok("a webhook made with `url` and a job's webhook_url: CloudConvert-Signature passes Webhook.verify "
       "(a wrong secret or a changed body does not), bodies in CloudConvert's statuses")

    assert client.delete(f"v2/webhooks/{made['id']}") == {}
    assert client.get("v2/users/me/webhooks?" + urllib.parse.urlencode({"filter[url]": hooks.url}))["data"] == []
    me = client.get("v2/users/me")["data"]
    assert me["username"] and "credits" in me, me
    ok("DELETE /v2/webhooks/{id}; GET /v2/users/me")


def main():
    configure(KEY)
    tasks_on_their_own()
    webhooks_signed_as_cloudconvert_signs_them()

    # Upload, convert (its option beside `operation`, as CloudConvert takes it), export.
    job = cloudconvert.Job.create(payload={
        "tag": "python-sdk",
        "tasks": {
            "upload-my-file": {"operation": "import/upload"},
            "convert-my-file": {"operation": "convert", "input": "upload-my-file",
                                "output_format": "png", "width": 320},
            "export-my-file": {"operation": "export/url", "input": "convert-my-file"},
        },
    })
    assert job["status"] in ("waiting", "processing"), job
    upload = next(t for t in job["tasks"] if t["name"] == "upload-my-file")
    assert cloudconvert.Task.upload(file_name=PHOTO, task=upload) is True, "the upload was refused"
    job = cloudconvert.Job.wait(id=job["id"])
    assert job["status"] == "finished", job
    f = exported(job)
    with tempfile.TemporaryDirectory() as d:
        path = cloudconvert.download(filename=os.path.join(d, f["filename"]), url=f["url"])
        data = open(path, "rb").read()
    assert png_size(data) == (320, 240), png_size(data)
    assert f["size"] == len(data), (f["size"], len(data))
    ok("upload, convert with a top-level option, export; Job.wait; the download decodes as 320x240")

    # An upload whose file name is not ASCII and has quotes (requests sends it in UTF-8,
    # quotes as %22): the name comes back, and so does the file.
    name = "photo – été 写真 \"quoted\".jpg"
    job = cloudconvert.Job.create(payload={"tasks": {
        "up": {"operation": "import/upload"},
        "out": {"operation": "export/url", "input": "up"},
    }})
    with tempfile.TemporaryDirectory() as d:
        named = os.path.join(d, name)
        shutil.copyfile(PHOTO, named)
        upload = next(t for t in job["tasks"] if t["name"] == "up")
        assert cloudconvert.Task.upload(file_name=named, task=upload) is True, "the upload was refused"
        job = cloudconvert.Job.wait(id=job["id"])
        assert job["status"] == "finished", job
        f = exported(job)
        # Made safe as every stored name is (a quote is not kept: `_`), the rest as given.
        assert f["filename"] == name.replace('"', "_"), f
        path = cloudconvert.download(filename=os.path.join(d, "back.jpg"), url=f["url"])
        assert open(path, "rb").read() == open(PHOTO, "rb").read()
    ok("an SDK upload of a file named in Unicode, with quotes: the name (quotes as _) and the bytes come back")

    # import/url, waited for on the sync API; the task waited for on its own too.
    job = cloudconvert.Job.create(payload={"tasks": {
        "fetch": {"operation": "import/url", "url": FILE_URL},
        "thumb": {"operation": "thumbnail", "input": "fetch", "output_format": "png", "width": 64},
        "out": {"operation": "export/url", "input": "thumb"},
    }})
    thumb = next(t for t in job["tasks"] if t["name"] == "thumb")
    thumb = cloudconvert.Task.wait(id=thumb["id"])
    assert thumb["status"] == "finished", thumb
    job = cloudconvert.Job.wait(id=job["id"])
    data, headers = download(exported(job)["url"])
    assert png_size(data)[0] == 64 and int(headers["Content-Length"]) == len(data)
    ok("import/url → thumbnail → export/url; Task.wait and Job.wait; an exact Content-Length")

    # Lists with filters.
    finished = cloudconvert.Job.all({"filter[status]": "finished", "filter[tag]": "python-sdk"})
    assert [j["tag"] for j in finished] == ["python-sdk"], finished
    shown = cloudconvert.Job.find(id=finished[0]["id"])
    assert shown["id"] == finished[0]["id"] and shown["links"]["self"].endswith(shown["id"])
    tasks = cloudconvert.Task.all({"filter[job_id]": job["id"], "filter[operation]": "thumbnail"})
    assert [t["name"] for t in tasks] == ["thumb"], tasks
    ok("Job.all with filter[status] and filter[tag]; Job.find; Task.all by job and operation")

    # Delete.
    assert cloudconvert.Job.delete(id=job["id"]) is True
    gone = cloudconvert.Job.find(id=job["id"])
    assert gone.get("code") == "not_found", gone
    ok("Job.delete; the job is gone afterwards (404 as the SDK surfaces it)")

    # The errors the SDK surfaces: invalid data (422), a bad key (401), a missing job (404).
    try:
        cloudconvert.Job.create(payload={"tasks": {"c": {"operation": "convert", "output_format": "png"}}})
        raise AssertionError("an invalid job was accepted")
    except exceptions.ResourceInvalid as e:
        body = e.content if isinstance(e.content, str) else text(e)
        assert "tasks.c.input" in body, body
    missing = cloudconvert.Job.find(id="00000000-0000-0000-0000-000000000000")
    assert missing.get("code") == "not_found", missing
    configure("not-a-key")
    refused = cloudconvert.default_client().get("v2/jobs")
    assert refused.get("code") == "unauthenticated", refused
    configure(KEY)
    ok("invalid data raises ResourceInvalid naming the field; a bad key and a missing job are refused")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        print(f"not ok - {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
