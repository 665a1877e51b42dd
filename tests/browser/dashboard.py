"""The dashboard in a real browser: Debian's Chromium driven by Playwright.

Run by tests/browser.rs against the real `runconvert serve` (started with
--allow-private-networks and --allow-signup); never `playwright install`: the browser
is the system's, launched by path. Environment:
  RC_URL          the server's base URL
  RC_KEY          an API key holding every scope
  RC_PHOTO        a JPEG photo (the tests' own fixture)
  RC_CHROMIUM     the browser binary (default /usr/bin/chromium)
  RC_SCREENSHOTS  a directory to save the README's screenshots in (optional)
Each check prints a line; the first that fails raises, and the exit status is 1.
"""

import http.server
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import ok, png_size  # noqa: E402

from playwright.sync_api import Error as PlaywrightError, expect, sync_playwright

BASE = os.environ["RC_URL"].rstrip("/")
KEY = os.environ["RC_KEY"]
PHOTO = os.environ["RC_PHOTO"]
SHOTS = os.environ.get("RC_SCREENSHOTS")
HOSTILE_TAG = '<script>window.pwned=1</script><b id="bold">tag</b>'



def api(method, path, key=KEY, body=None):
    """The API as a script calls it: (status, JSON body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def shot(page, name):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)




class Receiver(http.server.BaseHTTPRequestHandler):
    """Webhook receiver and slow file server on loopback."""

    hooks = []

    def log_message(self, *_):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Receiver.hooks.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def do_GET(self):
        # 40 chunks of 10 KB over ~8 s: the import's percent moves while the page watches.
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(40 * 10240))
        self.end_headers()
        for _ in range(40):
            self.wfile.write(b"x" * 10240)
            self.wfile.flush()
            time.sleep(0.2)


def serve():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}"


def sign_in(page, key):
    page.goto(BASE + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()


def main():
    receiver = serve()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("RC_CHROMIUM", "/usr/bin/chromium"))
        ctx = browser.new_context(viewport={"width": 1200, "height": 800})
        page = ctx.new_page()

        # Sign-in: a wrong key gets one message; the right one opens the jobs list.
        page.goto(BASE + "/")
        page.get_by_label("API key").fill("not-a-key")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("That API key was not accepted.")
        sign_in(page, KEY)
        ok("sign-in: a wrong key refused, the right one signed in")

        # A tag with markup is shown as text, and its script never runs.
        status, job = api("POST", "/v2/process/jobs", body={
            "tag": HOSTILE_TAG,
            "tasks": {"in": {"operation": "import/base64", "file": "aGVsbG8=", "filename": "a.txt"},
                      "out": {"operation": "export/url", "input": "in"}}})
        assert status == 201, (status, job)
        page.goto(BASE + "/dashboard/")
        expect(page.get_by_role("cell", name=HOSTILE_TAG)).to_be_visible()
        assert page.evaluate("window.pwned") is None, "the tag's script ran"
        assert page.locator("#bold").count() == 0, "the tag's markup became an element"
        page.get_by_label("Tag").fill(HOSTILE_TAG)
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("tbody tr")).to_have_count(1)
        page.get_by_label("Tag").fill("no such tag")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator(".empty")).to_contain_text("No jobs")
        ok("a tag with a script tag shown as text; the tag filter")
        control = ctx.new_page()
        control.set_content(f"<table><tr><td>{HOSTILE_TAG}</td></tr></table>")
        assert control.evaluate("window.pwned") == 1 and control.locator("#bold").count() == 1
        control.close()
        ok("control: the same tag put into a page unescaped runs, and the checks above see it")

        # A key made in the dashboard works from the API, with its scopes.
        page.get_by_role("link", name="API keys", exact=True).click()
        page.get_by_label("Name").fill("read-only key")
        for scope in ["task.write", "webhook.read", "webhook.write", "user.read", "user.write"]:
            page.get_by_label(scope).uncheck()
        page.get_by_role("button", name="Make key").click()
        read_only = page.get_by_label("New API key").input_value()
        assert api("GET", "/v2/process/jobs", key=read_only)[0] == 200
        status, body = api("POST", "/v2/process/jobs", key=read_only, body={"tasks": {}})
        assert status == 403 and "task.write" in body["message"], (status, body)
        page.get_by_label("Name").fill("second key")
        page.get_by_role("button", name="Make key").click()
        second = page.get_by_label("New API key").input_value()
        assert api("GET", "/v2/users/me/keys", key=second)[0] == 200
        ok("keys made in the dashboard work from the API; a read-only one gets 403 on writes")

        # A second browser signed in with the second key loses its session at revocation.
        other = browser.new_context().new_page()
        sign_in(other, second)
        other.reload()
        expect(other.get_by_role("heading", name="Jobs")).to_be_visible()
        page.get_by_role("button", name="Revoke second key").click()
        expect(page.get_by_role("cell", name="second key")).to_have_count(0)
        other.reload()
        expect(other.get_by_role("heading", name="Sign in")).to_be_visible()
        assert api("GET", "/v2/process/jobs", key=second)[0] == 401
        shot(page, "keys")
        ok("a revoked key's session ends at once")

        # Convert: a photo dropped on the page, png chosen from what jpg converts to.
        page.get_by_role("link", name="Convert", exact=True).click()
        photo = open(PHOTO, "rb").read()
        handle = page.evaluate_handle(
            """([bytes, name]) => { const dt = new DataTransfer();
                dt.items.add(new File([new Uint8Array(bytes)], name, {type: 'image/jpeg'})); return dt; }""",
            [list(photo), "photo.jpg"])
        page.dispatch_event("#drop", "drop", {"dataTransfer": handle})
        offered = page.locator("#output_format option").all_inner_texts()
        assert "png" in offered, f"a jpg is not offered png: {offered}"
        assert "mp3" not in offered, f"a jpg is offered mp3: {offered}"
        page.get_by_label("Convert to").select_option("png")
        page.get_by_label("Width, pixels").fill("200")
        page.get_by_label("Tag (optional)").fill("from the convert page")
        shot(page, "convert")
        page.get_by_role("button", name="Convert").click()
        page.wait_for_url(re.compile(r".*/dashboard/jobs/[0-9a-f-]+$"))
        expect(page.locator("#job-status")).to_have_text("completed", timeout=60_000)
        link = page.get_by_role("link", name=re.compile(r"\.png$"))
        expect(link).to_be_visible()
        got = page.request.get(link.get_attribute("href"))
        assert got.status == 200, got.status
        assert png_size(got.body()) == (200, 150), png_size(got.body())
        expect(page.locator("pre").last).to_contain_text("curl -X POST")
        expect(page.locator("pre").first).to_contain_text('"output_format": "png"')
        shot(page, "job")
        ok("a photo converted on the Convert page: the download decodes as a 200x150 PNG")

        # A job's percent moves on its page, without reloading it.
        status, job = api("POST", "/v2/process/jobs", body={
            "tasks": {"fetch": {"operation": "import/url", "url": receiver + "/slow.bin"},
                      "out": {"operation": "export/url", "input": "fetch"}}})
        assert status == 201, (status, job)
        page.goto(f"{BASE}/dashboard/jobs/{job['id']}")
        page.evaluate("window.sameDocument = true")
        seen = set()
        deadline = time.time() + 60
        while time.time() < deadline:
            # When the job ends the page reloads with its results: a read that the reload
            # interrupts ("Execution context was destroyed") is that reload too.
            try:
                if page.evaluate("window.sameDocument") is None:
                    break
                text = page.locator('tr[data-task="fetch"] [data-field="percent"]').inner_text(timeout=2_000)
            except PlaywrightError as e:
                if "context was destroyed" in str(e) or "navigation" in str(e):
                    break
                raise
            seen.add(int(text.split()[0]))
            time.sleep(0.2)
        between = sorted(v for v in seen if 0 < v < 100)
        assert len(between) >= 2, f"the percent did not move live: {sorted(seen)}"
        expect(page.locator("#job-status")).to_have_text("completed", timeout=30_000)
        ok(f"the percent moved live without a reload: {between}")

        # A webhook made in the dashboard gets a delivery, shown on its page.
        page.get_by_role("link", name="Webhooks", exact=True).click()
        page.get_by_label("Endpoint URL").fill(receiver + "/hook")
        page.get_by_label("job.finished").check()
        page.get_by_role("button", name=re.compile("webhook", re.I)).click()
        secret = page.get_by_label("Signing secret").input_value()
        assert len(secret) >= 32, secret
        shot(page, "webhooks")
        status, job = api("POST", "/v2/process/jobs", body={
            "tasks": {"in": {"operation": "import/base64", "file": "aGk=", "filename": "b.txt"},
                      "out": {"operation": "export/url", "input": "in"}}})
        assert status == 201
        deadline = time.time() + 30
        while time.time() < deadline and not any(h.get("job", {}).get("id") == job["id"] for h in Receiver.hooks):
            time.sleep(0.2)
        assert any(h.get("job", {}).get("id") == job["id"] for h in Receiver.hooks), Receiver.hooks
        page.get_by_role("link", name=receiver + "/hook").click()
        expect(page.get_by_role("cell", name="delivered").first).to_be_visible(timeout=10_000)
        expect(page.get_by_role("link", name=job["id"])).to_be_visible()
        ok("a webhook made in the dashboard received job.finished; its delivery is listed")

        page.get_by_role("link", name="Usage", exact=True).click()
        expect(page.get_by_role("heading", name="Usage")).to_be_visible()
        shot(page, "usage")
        page.get_by_role("link", name="Jobs", exact=True).click()
        shot(page, "jobs")

        # Sign-up: a new user with a first key, and none of alice's jobs.
        fresh = browser.new_context().new_page()
        fresh.goto(BASE + "/")
        fresh.get_by_label("Your name").fill("carol")
        fresh.get_by_role("button", name="Sign up and get a key").click()
        expect(fresh.get_by_role("heading", name="Welcome, carol")).to_be_visible()
        carol = fresh.get_by_label("API key").input_value()
        status, me = api("GET", "/v2/users/me", key=carol)
        assert status == 200 and me.get("name", me.get("data", {}).get("name")) == "carol", (status, me)
        fresh.get_by_role("link", name="Jobs", exact=True).click()
        expect(fresh.locator(".empty")).to_contain_text("No jobs")
        ok("sign-up made a user with a working key, who sees no one else's jobs")
        browser.close()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the test's failure, with what was seen
        print(f"not ok - {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
