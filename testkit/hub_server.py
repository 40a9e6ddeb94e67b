"""A stand-in for the model hub's file API on loopback, serving files of tiny generated
models the way the hub serves a repository's files.

    hub = HubServer()
    hub.add_repo("org/name", {"config.json": b"...", "unet/w.safetensors": data})
    hub.add_folder("org/sd", Path("tiny-sd"))   # every file under a folder
    hub.start()                                 # hub.url is http://127.0.0.1:<port>
    hub.cut_after("org/name", "unet/w.safetensors", 1000)  # next GET stops after 1000 bytes
    hub.down = True                             # every GET answers 503 until set back
    hub.hide_sizes = True                       # no sizes stated (no Content-Length)

Routes: ``HEAD`` and ``GET /{repo_id}/resolve/{revision}/{path}`` with the headers the
hub's client reads: ``X-Repo-Commit`` (the revision's commit), ``ETag`` and, for weight
files (stored with LFS on the hub), ``X-Linked-Etag`` (their sha256) and ``X-Linked-Size``;
``Range: bytes=N-`` answers ``206``. An unknown repo, revision or file is ``404`` with the
hub's ``X-Error-Code`` header. ``requests`` records (method, path, Range) of each request.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@dataclass
class Repo:
    commit: str
    files: dict[str, bytes]


@dataclass
class HubServer:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    down: bool = False
    # States no sizes (no X-Linked-Size, no Content-Length: the body ends when the
    # connection closes), as a proxy in front of the hub may.
    hide_sizes: bool = False
    _cuts: dict[tuple[str, str], int] = field(default_factory=dict)
    _down_after: set[tuple[str, str]] = field(default_factory=set)
    _server: ThreadingHTTPServer | None = None

    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> Repo:
        commit = hashlib.sha1(repo_id.encode() + b"".join(sorted(files.values()))).hexdigest()
        self.repos[repo_id] = Repo(commit, dict(files))
        return self.repos[repo_id]

    def add_folder(self, repo_id: str, folder: Path) -> Repo:
        files = {
            str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        }
        return self.add_repo(repo_id, files)

    def cut_after(self, repo_id: str, path: str, size: int, *, then_down: bool = False) -> None:
        """The next GET of this file sends its headers and ``size`` bytes, then drops the
        connection; ``then_down``: and the hub goes :attr:`down` (as when the fetching
        process is killed, nothing more arrives)."""
        self._cuts[(repo_id, path)] = size
        if then_down:
            self._down_after.add((repo_id, path))

    def file_requests(self, path: str) -> list[tuple[str, str]]:
        """(method, Range header) of each request for a file whose path ends with ``path``."""
        return [(method, rng) for method, p, rng in self.requests if p.endswith("/" + path)]

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def do_HEAD(self) -> None:
                self.answer(body=False)

            def do_GET(self) -> None:
                self.answer(body=True)

            def fail(self, status: int, code: str, message: str) -> None:
                data = message.encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def answer(self, body: bool) -> None:
                path = unquote(self.path.split("?", 1)[0])
                hub.requests.append((self.command, path, self.headers.get("Range", "")))
                parts = path.strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self.fail(404, "RepoNotFound", "Repository not found")
                repo_id, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self.fail(404, "RepoNotFound", "Repository not found")
                if revision not in ("main", repo.commit):
                    return self.fail(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                if name not in repo.files:
                    return self.fail(404, "EntryNotFound", f"{name} does not exist")
                if body and hub.down:
                    return self.fail(503, "ServiceUnavailable", "the hub is down")
                data = repo.files[name]
                sha = hashlib.sha256(data).hexdigest()
                start = 0
                wanted = self.headers.get("Range", "")
                if wanted.startswith("bytes=") and wanted.endswith("-"):
                    start = int(wanted[len("bytes=") : -1])
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", repo.commit)
                self.send_header("Accept-Ranges", "bytes")
                if name.endswith(LFS_SUFFIXES):
                    self.send_header("ETag", f'"{sha}"')
                    self.send_header("X-Linked-Etag", f'"{sha}"')
                    if not hub.hide_sizes:
                        self.send_header("X-Linked-Size", str(len(data)))
                else:
                    # (the hub's ETag of a file kept in git: its git blob id)
                    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                    self.send_header("ETag", f'"{blob}"')
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if hub.hide_sizes:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if not body:
                    return None
                cut = hub._cuts.pop((repo_id, name), None)
                if cut is None:
                    self.wfile.write(data[start:])
                    return None
                self.wfile.write(data[start : start + cut])
                self.wfile.flush()
                if (repo_id, name) in hub._down_after:
                    hub._down_after.discard((repo_id, name))
                    hub.down = True
                self.close_connection = True
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
