"""A model hub on 127.0.0.1, laid out like Hugging Face's, for the download tests.

``FakeHub(root)`` serves every ``root/OWNER/NAME/`` folder as the repository
``OWNER/NAME``: ``/api/models/OWNER/NAME/revision/REV`` lists the files (commit, sizes,
git blob ids, LFS sha256 for weights), ``/OWNER/NAME/resolve/COMMIT/FILE`` sends a file,
redirecting LFS files to ``/cdn/...`` as the real hub does, and honours ``Range``.
Dataset repositories live in ``root/datasets/OWNER/NAME/`` and are served as the hub
serves them: ``/api/datasets/OWNER/NAME/revision/REV`` and
``/datasets/OWNER/NAME/resolve/COMMIT/FILE``.
Faults can be switched on per test: drop the connection after some bytes, ignore
ranges, send corrupted bytes.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
# What Hugging Face's default .gitattributes stores in LFS (of the kinds the tests use).
LFS_SUFFIXES = (".safetensors", ".model", ".gguf", ".bin", ".pkl", ".pickle", ".parquet")


class FakeHub:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.served: list[tuple[str, str | None]] = []  # (file name, Range header) of answered file requests
        self.bytes_sent = 0
        self.drop_after: dict[str, int] = {}  # file name -> drop the connection after this many bytes (once)
        self.ignore_range = False
        self.corrupt: set[str] = set()
        self.unsafe_name: str | None = None
        self.no_checksum: set[str] = set()  # listed without blobId or lfs.sha256
        self.throttle_s = 0.0  # pause after every 64 KiB, to make a download slow enough to cancel
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep the test output clean
                pass

            def do_GET(self):
                hub.requests.append((self.path, self.headers.get("Range")))
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "revision":
                    return hub._listing(self, "/".join(parts[2:4]))
                if parts[:2] == ["api", "datasets"] and len(parts) >= 6 and parts[4] == "revision":
                    return hub._listing(self, "datasets/" + "/".join(parts[2:4]))
                if parts[0] == "datasets" and len(parts) >= 6 and parts[3] == "resolve":
                    return self._resolve("datasets/" + "/".join(parts[1:3]), "/".join(parts[5:]), "/cdn-datasets")
                if len(parts) >= 5 and parts[2] == "resolve":
                    return self._resolve("/".join(parts[:2]), "/".join(parts[4:]), "/cdn")
                if parts[0] == "cdn":
                    return hub._file(self, "/".join(parts[1:3]), "/".join(parts[3:]))
                if parts[0] == "cdn-datasets":
                    return hub._file(self, "datasets/" + "/".join(parts[1:3]), "/".join(parts[3:]))
                self._status(404)

            def _resolve(self, folder, name, cdn):
                if name.endswith(LFS_SUFFIXES):
                    self.send_response(302)
                    self.send_header("Location", f"{cdn}/{folder.removeprefix('datasets/')}/{name}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                return hub._file(self, folder, name)

            def _status(self, code):
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def range_requests(self, name: str) -> list[str]:
        return [r for n, r in self.served if n == name and r]

    # -- answers ---------------------------------------------------------------------------

    def _listing(self, handler, repo: str) -> None:
        folder = self.root / repo
        if not folder.is_dir():
            return handler._status(404)
        siblings = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            data = path.read_bytes()
            entry = {
                "rfilename": path.relative_to(folder).as_posix(),
                "size": len(data),
                "blobId": hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest(),
            }
            if path.name.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            if entry["rfilename"] in self.no_checksum:
                entry.pop("blobId")
                entry.pop("lfs", None)
            siblings.append(entry)
        if self.unsafe_name:
            siblings.append({"rfilename": self.unsafe_name, "size": 1, "blobId": "0" * 40})
        body = json.dumps({"id": repo.removeprefix("datasets/"), "sha": COMMIT, "siblings": siblings}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _file(self, handler, repo: str, name: str) -> None:
        path = self.root / repo / name
        if not path.is_file():
            return handler._status(404)
        self.served.append((name, handler.headers.get("Range")))
        data = path.read_bytes()
        if name in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        wanted = handler.headers.get("Range")
        if wanted and not self.ignore_range:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(data)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            handler.send_response(200)
        body = data[start:]
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        limit = self.drop_after.pop(name, None)
        if limit is not None and limit < len(body):
            handler.wfile.write(body[:limit])
            handler.wfile.flush()
            self.bytes_sent += limit
            handler.close_connection = True
            return
        step = 1 << 16 if self.throttle_s else len(body) or 1
        for start in range(0, len(body), step):
            handler.wfile.write(body[start:start + step])
            self.bytes_sent += len(body[start:start + step])
            if self.throttle_s:
                handler.wfile.flush()
                time.sleep(self.throttle_s)
