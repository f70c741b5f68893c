"""A package registry on 127.0.0.1, laid out like PyPI's JSON API, and real wheels to put in it.

``FakePyPI()`` answers ``/pypi/NAME/VERSION/json`` with the ``urls`` list PyPI gives (file
name, URL, size, sha256 digest, package type) for the wheels added with :meth:`add`, and
serves them at ``/files/FILENAME``, honouring ``Range``. Faults per test: corrupted bytes
(the listing keeps the true digest), a slow line to cancel on.

:func:`wheel_from_installed` makes a real wheel of an installed distribution: its files as
its RECORD lists them, a fresh RECORD with each file's sha256, and the tags of its WHEEL file.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import threading
import time
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SKIPPED = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}  # written by pip, not part of the wheel


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel_from_installed(dist_name: str, out_dir: Path, compression: int = zipfile.ZIP_STORED) -> Path:
    """A .whl of the installed ``dist_name``, as the registry would have served it."""
    dist = importlib.metadata.distribution(dist_name)
    info_dir = Path(dist._path)  # the .dist-info folder
    stem = info_dir.name.removesuffix(".dist-info")
    site = info_dir.parent
    wheel_text = (info_dir / "WHEEL").read_text("utf-8")
    tags = [line.split(":", 1)[1].strip() for line in wheel_text.splitlines() if line.startswith("Tag:")]
    pythons, abis, platforms = ([], [], [])
    for tag in tags:
        for bucket, value in zip((pythons, abis, platforms), tag.split("-"), strict=True):
            if value not in bucket:
                bucket.append(value)
    filename = f"{stem}-{'.'.join(pythons)}-{'.'.join(abis)}-{'.'.join(platforms)}.whl"
    out = Path(out_dir) / filename
    record = []
    with zipfile.ZipFile(out, "w", compression, compresslevel=1 if compression == zipfile.ZIP_DEFLATED else None) as archive:
        for entry in dist.files:
            name = str(entry)
            if name.endswith(".pyc") or "__pycache__" in name:
                continue
            if name.startswith(f"{info_dir.name}/") and name.split("/", 1)[1] in SKIPPED:
                continue
            if name.startswith("../"):  # scripts and data files live in .data/ inside a wheel
                bare = name.lstrip("./")
                member = (f"{stem}.data/scripts/{Path(bare).name}" if "/bin/" in f"/{bare}"
                          else f"{stem}.data/data/{bare}")
            else:
                member = name
            data = (site / name).read_bytes()
            info = zipfile.ZipInfo(member, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = ((site / name).stat().st_mode & 0o777) << 16
            archive.writestr(info, data)
            record.append(f"{member},{_record_hash(data)},{len(data)}")
        record.append(f"{info_dir.name}/RECORD,,")
        archive.writestr(f"{info_dir.name}/RECORD", "\n".join(record) + "\n")
    return out


class FakePyPI:
    def __init__(self):
        self.packages: dict[tuple[str, str], list[Path]] = {}
        self.digests: dict[str, str] = {}
        self.served: list[tuple[str, str | None]] = []  # (file name, Range header)
        self.corrupt: set[str] = set()
        self.throttle_s = 0.0
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).strip("/").split("/")
                if len(parts) == 4 and parts[0] == "pypi" and parts[3] == "json":
                    return registry._json(self, parts[1], parts[2])
                if len(parts) == 2 and parts[0] == "files":
                    return registry._file(self, parts[1])
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, name: str, version: str, wheel: Path) -> None:
        self.packages.setdefault((name, version), []).append(Path(wheel))
        self.digests[Path(wheel).name] = hashlib.sha256(Path(wheel).read_bytes()).hexdigest()

    def __enter__(self) -> "FakePyPI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _send(self, handler, code: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        handler.send_response(code)
        for key, value in (extra or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _json(self, handler, name: str, version: str) -> None:
        wheels = self.packages.get((name, version))
        if wheels is None:
            return self._send(handler, 404, b"")
        urls = [{"filename": w.name, "url": f"{self.endpoint}/files/{w.name}", "size": w.stat().st_size,
                 "digests": {"sha256": self.digests[w.name]}, "packagetype": "bdist_wheel"} for w in wheels]
        body = json.dumps({"info": {"name": name, "version": version}, "urls": urls}).encode()
        self._send(handler, 200, body, {"Content-Type": "application/json"})

    def _file(self, handler, filename: str) -> None:
        path = next((w for ws in self.packages.values() for w in ws if w.name == filename), None)
        if path is None:
            return self._send(handler, 404, b"")
        wanted = handler.headers.get("Range")
        self.served.append((filename, wanted))
        data = path.read_bytes()
        if filename in self.corrupt:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
        start = int(wanted.removeprefix("bytes=").split("-")[0]) if wanted else 0
        handler.send_response(206 if wanted else 200)
        if wanted:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        body = data[start:]
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        step = 1 << 16 if self.throttle_s else max(len(body), 1)
        try:
            for offset in range(0, len(body), step):
                handler.wfile.write(body[offset:offset + step])
                if self.throttle_s:
                    handler.wfile.flush()
                    time.sleep(self.throttle_s)
        except (BrokenPipeError, ConnectionResetError):  # the client cancelled
            pass
