"""Moving bytes: plain HTTP(S) with resume, and Google Drive through gdown (used by `hub.fetch`).

Both raise `SourceFailed` with a one-line reason when a source cannot deliver; `hub.fetch` then
tries the next one -- unless the failure says this machine has no network at all (`no_network`: the name
resolver cannot be reached, the network is down or unreachable), where every mirror would fail the same way,
each after its own timeouts.
"""
from __future__ import annotations

import errno
import inspect
import re
import socket
import sys
from pathlib import Path
from typing import IO, Any

from e4ecli import __version__

TIMEOUT_S = 30.0  # seconds to connect and between two reads
CHUNK_BYTES = 1 << 20
USER_AGENT = f"e4ecli/{__version__} (+https://github.com/omertov/encoder4editing weights)"


class SourceFailed(Exception):
    """One source could not deliver the file; the next one is tried.

    `web_page`: the source answered with a page instead of the file (Google Drive's quota or
    virus-scan page, which gdown reports as a retrieval error)."""

    def __init__(self, message: str, web_page: bool = False, no_network: bool = False):
        super().__init__(message)
        self.web_page, self.no_network = web_page, no_network


def no_network(error: BaseException) -> bool:
    """Whether a connection failure (or what caused it: URLError.reason, requests' wrapped urllib3 errors) shows
    that there is no network here rather than one host's problem: the resolver is unreachable (EAI_AGAIN), the
    network down or unreachable. Refused connections, unknown host names and HTTP errors are one host's."""
    todo, seen = [error], set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, socket.gaierror) and e.errno == socket.EAI_AGAIN:
            return True
        if isinstance(e, OSError) and not isinstance(e, socket.gaierror) and e.errno in (errno.ENETUNREACH, errno.ENETDOWN):
            return True
        reason = getattr(e, "reason", None)
        todo += [x for x in (reason, e.__cause__, e.__context__, *getattr(e, "args", ())) if isinstance(x, BaseException)]
    return False


# -- plain HTTP(S) ----------------------------------------------------------------------------
def http(url: str, part: Path, expected_size: int | None, progress: bool, label: str) -> None:
    """Complete `part` from `url`, resuming with a Range request when it already holds bytes."""
    offset = part.stat().st_size if part.is_file() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0
    if expected_size is not None and offset == expected_size:
        return  # a previous run got every byte; _verify decides whether they are the right ones
    response = _open(url, offset)
    if response is None:  # 416: the server has nothing past `offset`
        if _range_total(url) == offset:
            return
        part.unlink(missing_ok=True)
        offset = 0
        response = _open(url, 0)
        assert response is not None
    with response:
        start, total = _start_and_total(response, offset)
        if expected_size is not None and total is not None and total != expected_size:
            raise SourceFailed(f"the server offers {total} bytes, the zoo expects {expected_size}")
        _copy(response, part, start, total if total is not None else expected_size, progress, label)


def _open(url: str, offset: int) -> Any:
    """urlopen with a Range header from `offset`; None for 416 (range not satisfiable)."""
    import http.client
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen

    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urlopen(Request(url, headers=headers), timeout=TIMEOUT_S)
    except HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            return None
        raise SourceFailed(f"HTTP {e.code} {e.reason}") from None
    except (URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise SourceFailed(f"cannot connect ({reason})", no_network=no_network(e)) from None


def _range_total(url: str) -> int | None:
    """The total size a server reports for `url` (HEAD request), to judge a 416 answer."""
    from urllib.error import URLError
    from urllib.request import Request, urlopen

    try:
        with urlopen(Request(url, method="HEAD", headers={"User-Agent": USER_AGENT}), timeout=TIMEOUT_S) as r:
            length = r.headers.get("Content-Length")
    except (URLError, OSError):
        return None
    return int(length) if length and length.isdigit() else None


def _start_and_total(response: Any, offset: int) -> tuple[int, int | None]:
    """Where the body starts in the file and the file's total size, from the response headers.

    206 must continue exactly at `offset`; 200 means the server sent the whole file (it ignored
    or was not asked for a Range), so the part file starts over.
    """
    if response.status == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if not match or int(match.group(1)) != offset:
            raise SourceFailed(f"the server answered a resume from byte {offset} with a different range")
        return offset, None if match.group(3) == "*" else int(match.group(3))
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _copy(response: IO[bytes], part: Path, start: int, total: int | None, progress: bool, label: str) -> None:
    """Write the body into `part` from byte `start`, with a progress bar; short bodies fail."""
    import http.client

    from tqdm import tqdm

    done = start
    with open(part, "ab" if start else "wb") as out, tqdm(
        total=total,
        initial=start,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    ) as bar:
        try:
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                out.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise SourceFailed(_interrupted(part, done, total, f"{type(e).__name__}: {e}")) from None
    if total is not None and done < total:
        raise SourceFailed(_interrupted(part, done, total, "connection closed early"))


def _interrupted(part: Path, done: int, total: int | None, why: str) -> str:
    """The message for a transfer that stopped midway (the part file is kept for a resume)."""
    of = f" of {total}" if total is not None else ""
    return f"transfer interrupted after {done}{of} bytes ({why}); {part} is kept, run again to resume"


# -- Google Drive -----------------------------------------------------------------------------
def gdrive(file_id: str, staging: Path, progress: bool) -> Path:
    """Fetch a Drive file with gdown (it handles the confirm page and resumes its own parts)."""
    try:
        import gdown
        import requests
    except ImportError:
        raise SourceFailed("gdown is not installed (pip install gdown)") from None
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, requests.RequestException)
    retrieval = getattr(getattr(gdown, "exceptions", None), "FileURLRetrievalError", None)
    if retrieval is not None:
        errors += (retrieval,)
    options: dict[str, Any] = {"quiet": not progress, "resume": True}
    if "timeout" in inspect.signature(gdown.download).parameters:  # newer gdown releases
        options["timeout"] = TIMEOUT_S
    try:
        out = gdown.download(id=file_id, output=str(staging), **options)
    except errors as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        detail = next((line for line in lines if "too many users" in line.lower()), lines[0] if lines else type(e).__name__)
        raise SourceFailed(f"Google Drive: {detail}", web_page=retrieval is not None and isinstance(e, retrieval),
                           no_network=no_network(e)) from None
    if out is None or not staging.is_file():
        raise SourceFailed("Google Drive refused the file (or it is not shared publicly)", web_page=True)
    return staging
