#!/usr/bin/env python3
"""A small Google Cloud Storage emulator speaking the *XML API*, for the connector tests.

Why it exists: the Rust `object_store` crate (0.14), pointed at an emulator with
`gcs_base_url` and `disable_oauth`, talks to the GCS XML API (the S3-like one), and no
emulator on PyPI or npm serves that API well enough:
  - gcp-storage-emulator sends no ETag (object_store requires one) and answers 501 to
    HEAD, listing and multipart uploads;
  - fake-gcs-server rejects a plain XML `PUT /bucket/key` with "invalid uploadType".
So this file, Python standard library only, serves exactly what object_store sends:

  PUT    /BUCKET/KEY                    upload (Content-Type, Cache-Control,
                                        Content-Disposition/-Encoding/-Language and
                                        x-goog-meta-* are kept; x-goog-if-generation-match
                                        is honoured; x-goog-copy-source makes it a copy)
  GET    /BUCKET/KEY, HEAD /BUCKET/KEY  download with ETag, Last-Modified,
                                        x-goog-generation, Range, If-Match,
                                        If-None-Match, If-(Un)Modified-Since, ?generation=
  DELETE /BUCKET/KEY                    delete
  GET    /BUCKET?list-type=2            list (prefix, delimiter, max-keys, start-after,
                                        continuation-token)
  POST   /BUCKET/KEY?uploads            XML multipart upload: initiate,
  PUT    /BUCKET/KEY?partNumber=N&uploadId=U   upload a part,
  POST   /BUCKET/KEY?uploadId=U         complete,
  DELETE /BUCKET/KEY?uploadId=U         abort
  PUT    /BUCKET                        create a bucket (XML API)
  GET    /                              list buckets (XML API; also a health check)
  POST   /storage/v1/b  {"name": "B"}   create a bucket (JSON API, as other emulators do)
  GET    /storage/v1/b/B, DELETE /storage/v1/b/B

Errors are GCS XML errors: `<Error><Code>NoSuchBucket</Code>...` (404) for a missing
bucket, `<Code>NoSuchKey</Code>` (404) for a missing object, PreconditionFailed (412)...
No authentication is checked.

Objects live in memory, or with --data-dir in that directory (one folder per bucket,
each object as a data file plus a JSON metadata file), which survives restarts.
Unfinished multipart uploads are always kept in memory.

  python3 gcs_emulator.py --host 127.0.0.1 --port 47003 [--data-dir DIR] [--bucket B]...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import threading
import time
import traceback
import uuid
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

XML_DECL = "<?xml version='1.0' encoding='UTF-8'?>"
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
# Request headers stored with an object and sent back on GET and HEAD.
KEPT_HEADERS = ("content-type", "cache-control", "content-disposition", "content-encoding",
                "content-language", "x-goog-storage-class")
DEFAULT_CONTENT_TYPE = "application/octet-stream"

ERROR_MESSAGES = {
    "NoSuchBucket": "The specified bucket does not exist.",
    "NoSuchKey": "The specified key does not exist.",
    "NoSuchUpload": "The requested upload was not found.",
    "PreconditionFailed": "At least one of the pre-conditions you specified did not hold.",
    "InvalidArgument": "Invalid argument.",
    "InvalidBucketName": "The specified bucket is not valid.",
    "InvalidPart": "One or more of the specified parts could not be found.",
    "InvalidRange": "The requested range cannot be satisfied.",
    "BucketAlreadyOwnedByYou": "Your previous request to create the named bucket succeeded "
                               "and you already own it.",
    "BucketNotEmpty": "The bucket you tried to delete is not empty.",
    "MethodNotAllowed": "The specified method is not allowed against this resource.",
    "InternalError": "We encountered an internal error. Please try again.",
}


class GcsError(Exception):
    def __init__(self, status: int, code: str, details: str = ""):
        super().__init__(code)
        self.status, self.code, self.details = status, code, details


@dataclass
class Meta:
    """What is known of one stored object, apart from its bytes."""
    key: str
    size: int
    etag: str           # quoted MD5 of the content, as GCS gives for non-composite objects
    generation: str
    mtime: float
    headers: dict = field(default_factory=dict)  # lower-case name -> value


@dataclass
class Upload:
    bucket: str
    key: str
    headers: dict
    parts: dict = field(default_factory=dict)  # part number -> (etag, bytes)


def md5_etag(data: bytes) -> str:
    return '"%s"' % hashlib.md5(data).hexdigest()


def http_date(t: float) -> str:
    return formatdate(t, usegmt=True)


def iso_date(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


class Storage:
    """Buckets of objects, in memory or under a directory. Callers hold `lock`."""

    def __init__(self, data_dir: Path | None):
        self.lock = threading.RLock()
        self.data_dir = data_dir
        self.buckets: dict[str, dict[str, Meta]] = {}
        self.blobs: dict[tuple[str, str], bytes] = {}  # in-memory contents
        self.uploads: dict[str, Upload] = {}
        self.last_generation = int(time.time() * 1e6)
        if data_dir is not None:
            self._load()

    # --- the directory layout: DIR/BUCKET/<sha256 of key>.{data,json} ----------------
    def _file(self, bucket: str, key: str, ext: str) -> Path:
        assert self.data_dir is not None
        return self.data_dir / bucket / (hashlib.sha256(key.encode()).hexdigest() + ext)

    def _load(self) -> None:
        assert self.data_dir is not None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for bdir in sorted(p for p in self.data_dir.iterdir() if p.is_dir()):
            objects = self.buckets.setdefault(bdir.name, {})
            for mfile in bdir.glob("*.json"):
                meta = Meta(**json.loads(mfile.read_text()))
                objects[meta.key] = meta
                self.last_generation = max(self.last_generation, int(meta.generation))

    @staticmethod
    def _write_atomic(path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    # --- buckets ------------------------------------------------------------------------
    def create_bucket(self, name: str) -> bool:
        """False when it already exists."""
        if not BUCKET_NAME.match(name or ""):
            raise GcsError(400, "InvalidBucketName", name or "")
        if name in self.buckets:
            return False
        self.buckets[name] = {}
        if self.data_dir is not None:
            (self.data_dir / name).mkdir(parents=True, exist_ok=True)
        return True

    def delete_bucket(self, name: str) -> None:
        if self.bucket(name):
            raise GcsError(409, "BucketNotEmpty", name)
        del self.buckets[name]
        if self.data_dir is not None:
            try:
                (self.data_dir / name).rmdir()
            except OSError:
                pass

    def bucket(self, name: str) -> dict[str, Meta]:
        objects = self.buckets.get(name)
        if objects is None:
            raise GcsError(404, "NoSuchBucket", "No such bucket: %s" % name)
        return objects

    # --- objects ------------------------------------------------------------------------
    def get(self, bucket: str, key: str) -> Meta:
        meta = self.bucket(bucket).get(key)
        if meta is None:
            raise GcsError(404, "NoSuchKey", "No such object: %s/%s" % (bucket, key))
        return meta

    def read(self, bucket: str, meta: Meta) -> bytes:
        if self.data_dir is None:
            return self.blobs[(bucket, meta.key)]
        return self._file(bucket, meta.key, ".data").read_bytes()

    def put(self, bucket: str, key: str, data: bytes, headers: dict) -> Meta:
        objects = self.bucket(bucket)
        self.last_generation = max(self.last_generation + 1, int(time.time() * 1e6))
        meta = Meta(key=key, size=len(data), etag=md5_etag(data),
                    generation=str(self.last_generation), mtime=time.time(), headers=headers)
        if self.data_dir is None:
            self.blobs[(bucket, key)] = data
        else:
            self._write_atomic(self._file(bucket, key, ".data"), data)
            self._write_atomic(self._file(bucket, key, ".json"), json.dumps(asdict(meta)).encode())
        objects[key] = meta
        return meta

    def delete(self, bucket: str, key: str) -> None:
        self.get(bucket, key)
        del self.buckets[bucket][key]
        if self.data_dir is None:
            del self.blobs[(bucket, key)]
        else:
            for ext in (".json", ".data"):
                self._file(bucket, key, ext).unlink(missing_ok=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every reply carries Content-Length
    server_version = "gcs-emulator"
    storage: Storage  # set on the subclass made in main()
    quiet = False

    # --- plumbing -----------------------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 (the base class's signature)
        if not self.quiet:
            sys.stderr.write("%s %s\n" % (self.log_date_time_string(), format % args))

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status: int, body: bytes | str = b"", headers: dict | None = None) -> None:
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def send_xml(self, status: int, xml: str, headers: dict | None = None) -> None:
        self.send(status, XML_DECL + xml, {"Content-Type": "application/xml; charset=UTF-8",
                                           **(headers or {})})

    def send_json(self, status: int, value) -> None:
        self.send(status, json.dumps(value), {"Content-Type": "application/json; charset=UTF-8"})

    def send_error_xml(self, e: GcsError) -> None:
        self.send_xml(e.status, "<Error><Code>%s</Code><Message>%s</Message>%s</Error>" % (
            e.code, escape(ERROR_MESSAGES.get(e.code, e.code)),
            "<Details>%s</Details>" % escape(e.details) if e.details else ""))

    def handle_one(self) -> None:
        url = urlsplit(self.path)
        query: dict[str, list[str]] = parse_qs(url.query, keep_blank_values=True)
        body = self.read_body()  # always, so that a keep-alive connection stays in step
        try:
            if url.path.startswith("/storage/v1/"):
                return self.json_api(url.path[len("/storage/v1"):], body)
            bucket, _, key = url.path.lstrip("/").partition("/")
            bucket, key = unquote(bucket), unquote(key)
            method = getattr(self, "xml_" + self.command.lower())
            with self.storage.lock:
                method(bucket, key, {k: v[-1] for k, v in query.items()}, query, body)
        except Exception as e:  # noqa: BLE001 (answer 500 rather than drop the connection)
            if not isinstance(e, GcsError):
                self.log_error("internal error: %r", e)
                traceback.print_exc()
                e = GcsError(500, "InternalError", repr(e))
            if url.path.startswith("/storage/v1/"):
                self.send_json(e.status, {"error": {"code": e.status, "message": e.details or e.code,
                                                    "errors": [{"reason": e.code}]}})
            else:
                self.send_error_xml(e)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = handle_one

    # --- JSON API: buckets only ----------------------------------------------------------
    def json_api(self, path: str, body: bytes) -> None:
        s = self.storage
        with s.lock:
            if path == "/b" and self.command == "POST":
                try:
                    name = json.loads(body or b"{}").get("name", "")
                except ValueError:
                    raise GcsError(400, "InvalidArgument", "body is not JSON")
                if not s.create_bucket(name):
                    raise GcsError(409, "BucketAlreadyOwnedByYou", ERROR_MESSAGES["BucketAlreadyOwnedByYou"])
                return self.send_json(200, {"kind": "storage#bucket", "id": name, "name": name})
            m = re.fullmatch(r"/b/([^/]+)", path)
            if m and self.command == "GET":
                name = unquote(m.group(1))
                s.bucket(name)
                return self.send_json(200, {"kind": "storage#bucket", "id": name, "name": name})
            if m and self.command == "DELETE":
                s.delete_bucket(unquote(m.group(1)))
                return self.send(204)
        raise GcsError(405, "MethodNotAllowed", "%s /storage/v1%s" % (self.command, path))

    # --- XML API -------------------------------------------------------------------------
    def xml_get(self, bucket: str, key: str, q: dict, multi: dict, body: bytes) -> None:
        s = self.storage
        if not bucket:
            names = "".join("<Bucket><Name>%s</Name></Bucket>" % escape(b) for b in sorted(s.buckets))
            return self.send_xml(200, "<ListAllMyBucketsResult><Buckets>%s</Buckets>"
                                      "</ListAllMyBucketsResult>" % names)
        if not key:
            return self.list_objects(bucket, q, multi)
        meta = s.get(bucket, key)
        if "generation" in q and q["generation"] != meta.generation:
            raise GcsError(404, "NoSuchKey", "No such object: %s/%s#%s" % (bucket, key, q["generation"]))
        headers = {"ETag": meta.etag, "Last-Modified": http_date(meta.mtime),
                   "x-goog-generation": meta.generation, "x-goog-metageneration": "1",
                   "x-goog-stored-content-length": str(meta.size), "Accept-Ranges": "bytes"}
        for name, value in meta.headers.items():
            headers[name.title() if name in KEPT_HEADERS else name] = value
        headers.setdefault("Content-Type", DEFAULT_CONTENT_TYPE)
        status = self.check_conditions(meta)
        if status == 304:
            return self.send(304, headers={k: headers[k] for k in ("ETag", "Last-Modified")})
        data = s.read(bucket, meta)
        rng = self.headers.get("Range")
        if rng:
            start, end = self.parse_range(rng.strip(), len(data))
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, end, len(data))
            return self.send(206, data[start:end + 1], headers)
        self.send(200, data, headers)

    xml_head = xml_get

    def check_conditions(self, meta: Meta) -> int:
        """RFC 9110 order; raises 412, or answers 304 or 200."""
        h = self.headers
        mtime = int(meta.mtime)
        if h.get("If-Match") is not None:
            if h["If-Match"].strip() != "*" and meta.etag not in [t.strip() for t in h["If-Match"].split(",")]:
                raise GcsError(412, "PreconditionFailed", "If-Match")
        elif h.get("If-Unmodified-Since") and mtime > parsedate_to_datetime(h["If-Unmodified-Since"]).timestamp():
            raise GcsError(412, "PreconditionFailed", "If-Unmodified-Since")
        if h.get("If-None-Match") is not None:
            tags = [t.strip() for t in h["If-None-Match"].split(",")]
            if "*" in tags or meta.etag in tags:
                return 304
        elif h.get("If-Modified-Since") and mtime <= parsedate_to_datetime(h["If-Modified-Since"]).timestamp():
            return 304
        return 200

    @staticmethod
    def parse_range(rng: str, size: int) -> tuple[int, int]:
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng)
        if not m or m.group(1) == m.group(2) == "":
            raise GcsError(400, "InvalidArgument", "unsupported Range: %s" % rng)
        first, last = m.group(1), m.group(2)
        if first == "":  # the last N bytes
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start >= size or start > end:
            raise GcsError(416, "InvalidRange", "bytes */%d" % size)
        return start, end

    def list_objects(self, bucket: str, q: dict, multi: dict) -> None:
        objects = self.storage.bucket(bucket)
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        after = max(q.get("start-after", ""), q.get("continuation-token", ""), q.get("marker", ""))
        max_keys = min([int(v) for v in multi.get("max-keys", [])] + [1000])
        # Each key becomes an entry: itself, or its common prefix up to the delimiter.
        # Entries come out in sorted order, so paging resumes after the last one given.
        entries: list[tuple[str, Meta | None]] = []
        for key in sorted(objects):
            if not key.startswith(prefix):
                continue
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            name, meta = (key[:cut + len(delimiter)], None) if cut >= 0 else (key, objects[key])
            if name <= after or (entries and entries[-1][0] == name):
                continue
            entries.append((name, meta))
        truncated = len(entries) > max_keys
        entries = entries[:max_keys]
        out = ["<ListBucketResult><Name>%s</Name><Prefix>%s</Prefix>" % (escape(bucket), escape(prefix)),
               "<Delimiter>%s</Delimiter>" % escape(delimiter) if delimiter else "",
               "<KeyCount>%d</KeyCount><MaxKeys>%d</MaxKeys><IsTruncated>%s</IsTruncated>"
               % (len(entries), max_keys, "true" if truncated else "false")]
        for name, meta in entries:
            if meta is None:
                out.append("<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>" % escape(name))
            else:
                out.append("<Contents><Key>%s</Key><Generation>%s</Generation>"
                           "<MetaGeneration>1</MetaGeneration><LastModified>%s</LastModified>"
                           "<ETag>%s</ETag><Size>%d</Size></Contents>"
                           % (escape(name), meta.generation, iso_date(meta.mtime), escape(meta.etag), meta.size))
        if truncated:
            out.append("<NextContinuationToken>%s</NextContinuationToken>" % escape(entries[-1][0]))
        out.append("</ListBucketResult>")
        self.send_xml(200, "".join(out))

    def kept_headers(self) -> dict:
        return {name.lower(): value for name, value in self.headers.items()
                if name.lower() in KEPT_HEADERS or name.lower().startswith("x-goog-meta-")}

    def xml_put(self, bucket: str, key: str, q: dict, multi: dict, body: bytes) -> None:
        s = self.storage
        if not key:
            if not s.create_bucket(bucket):
                raise GcsError(409, "BucketAlreadyOwnedByYou", bucket)
            return self.send(200)
        objects = s.bucket(bucket)
        if "uploadId" in q:
            upload = s.uploads.get(q["uploadId"])
            if upload is None or (upload.bucket, upload.key) != (bucket, key):
                raise GcsError(404, "NoSuchUpload", q["uploadId"])
            etag = md5_etag(body)
            upload.parts[int(q.get("partNumber", "0"))] = (etag, body)
            return self.send(200, headers={"ETag": etag})
        wanted = self.headers.get("x-goog-if-generation-match")
        current = objects.get(key)
        if wanted is not None and (current.generation if current else "0") != wanted.strip():
            raise GcsError(412, "PreconditionFailed", "x-goog-if-generation-match: %s" % wanted)
        source = self.headers.get("x-goog-copy-source")
        if source:
            src_bucket, _, src_key = unquote(source).lstrip("/").partition("/")
            src = s.get(src_bucket, src_key)
            meta = s.put(bucket, key, s.read(src_bucket, src), dict(src.headers))
            return self.send_xml(200, "<CopyObjectResult><LastModified>%s</LastModified><ETag>%s</ETag>"
                                      "</CopyObjectResult>" % (iso_date(meta.mtime), escape(meta.etag)),
                                 {"ETag": meta.etag, "x-goog-generation": meta.generation})
        meta = s.put(bucket, key, body, self.kept_headers())
        self.send(200, headers={"ETag": meta.etag, "x-goog-generation": meta.generation})

    def xml_post(self, bucket: str, key: str, q: dict, multi: dict, body: bytes) -> None:
        s = self.storage
        s.bucket(bucket)
        if not key:
            raise GcsError(400, "InvalidArgument", "POST needs an object name")
        if "uploads" in q:
            upload_id = uuid.uuid4().hex
            s.uploads[upload_id] = Upload(bucket, key, self.kept_headers())
            return self.send_xml(200, "<InitiateMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key>"
                                      "<UploadId>%s</UploadId></InitiateMultipartUploadResult>"
                                      % (escape(bucket), escape(key), upload_id))
        if "uploadId" in q:
            upload = s.uploads.get(q["uploadId"])
            if upload is None or (upload.bucket, upload.key) != (bucket, key):
                raise GcsError(404, "NoSuchUpload", q["uploadId"])
            try:
                parts = [(int(p.findtext("PartNumber", "")), p.findtext("ETag", "").strip())
                         for p in ET.fromstring(body).iter("Part")]
            except (ET.ParseError, ValueError):
                raise GcsError(400, "InvalidArgument", "malformed CompleteMultipartUpload")
            if not parts:
                raise GcsError(400, "InvalidArgument", "no parts")
            data = []
            for number, etag in parts:
                stored = upload.parts.get(number)
                if stored is None or stored[0].strip('"') != etag.strip('"'):
                    raise GcsError(400, "InvalidPart", "part %d" % number)
                data.append(stored[1])
            meta = s.put(bucket, key, b"".join(data), upload.headers)
            del s.uploads[q["uploadId"]]
            return self.send_xml(200, "<CompleteMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key>"
                                      "<ETag>%s</ETag></CompleteMultipartUploadResult>"
                                      % (escape(bucket), escape(key), escape(meta.etag)),
                                 {"x-goog-generation": meta.generation})
        raise GcsError(400, "InvalidArgument", "POST needs ?uploads or ?uploadId")

    def xml_delete(self, bucket: str, key: str, q: dict, multi: dict, body: bytes) -> None:
        s = self.storage
        if not key:
            s.delete_bucket(bucket)
            return self.send(204)
        s.bucket(bucket)
        if "uploadId" in q:
            if s.uploads.pop(q["uploadId"], None) is None:
                raise GcsError(404, "NoSuchUpload", q["uploadId"])
            return self.send(204)
        s.delete(bucket, key)
        self.send(204)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=47003, help="port (default 47003; 0 picks one)")
    ap.add_argument("--data-dir", type=Path, help="keep objects in this directory (default: memory)")
    ap.add_argument("--bucket", action="append", default=[], help="create this bucket (repeatable)")
    ap.add_argument("--quiet", action="store_true", help="do not log requests to stderr")
    args = ap.parse_args()

    storage = Storage(args.data_dir)
    for name in args.bucket:
        storage.create_bucket(name)
    handler = type("BoundHandler", (Handler,), {"storage": storage, "quiet": args.quiet})
    ThreadingHTTPServer.request_queue_size = 128  # listen backlog; the default 5 is small for parallel tests
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print("gcs emulator listening on http://%s:%d (%s)" % (
        host, port, args.data_dir or "in memory"), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
