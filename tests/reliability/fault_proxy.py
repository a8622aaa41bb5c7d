"""A fault-injecting HTTP proxy on 127.0.0.1, put between a client (SessionsClient, a kernel) and a server.

Each request comes and goes to the server on connections of its own (``Connection: close`` both ways), so
the proxy knows where every request and answer begins and ends without parsing more than headers and
``Content-Length``.
A rule (method, path pattern, mode, how many times) picks the requests a fault hits:

- ``drop``: the connection is closed before anything reaches the server;
- ``reset``: the same, with a TCP RST (SO_LINGER 0) instead of a FIN;
- ``drop_answer``: the request reaches the server and its whole answer is read, then the client's
  connection is closed without a byte of it: the request *did* land;
- ``reset_answer``: the same, with a RST;
- ``truncate``: the answer's headers and half its body are sent, then the connection is closed;
- ``delay``: the answer is held ``delay`` seconds, then sent (if the client still listens).

Everything else is relayed as it comes, so long-polls and streamed answers behave as without the proxy.
``seen`` lists every request (method, path, mode) in the order it came.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODES = ("drop", "reset", "drop_answer", "reset_answer", "truncate", "delay")
_IO_TIMEOUT = 120.0  # seconds any one socket read may block: a held long-poll is at most 30 s


@dataclass
class Rule:
    mode: str
    method: str
    path: re.Pattern[str]
    times: int
    delay: float = 0.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.hits < self.times and method == self.method and bool(self.path.search(path))


@dataclass
class Seen:
    method: str
    path: str
    mode: str  # "pass" or the fault's mode


@dataclass
class FaultProxy:
    """Start with ``start()`` (or use as a context manager); ``url`` is where clients connect."""

    upstream: str  # http://host:port of the server
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        match = re.fullmatch(r"http://([^:/]+):(\d+)/?", self.upstream)
        if match is None:
            raise ValueError(f"the upstream must be http://host:port, not {self.upstream!r}")
        self._target = (match.group(1), int(match.group(2)))
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults ------------------------------------------------------------------------------------

    def fault(self, mode: str, method: str, path: str, times: int = 1, delay: float = 0.0) -> Rule:
        """Hit the next ``times`` requests ``method`` whose path matches the regex ``path`` with ``mode``."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        rule = Rule(mode, method, re.compile(path), times, delay)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.seen.clear()

    def count(self, method: str, path: str) -> int:
        """How many requests ``method`` matching the regex ``path`` came, faulted or not."""
        pattern = re.compile(path)
        with self._lock:
            return sum(1 for s in self.seen if s.method == method and pattern.search(s.path))

    def _pick(self, method: str, path: str) -> Rule | None:
        with self._lock:
            rule = next((r for r in self.rules if r.matches(method, path)), None)
            if rule is not None:
                rule.hits += 1
            self.seen.append(Seen(method, path, rule.mode if rule else "pass"))
            return rule

    # -- plumbing ----------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name="fault-proxy-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(_IO_TIMEOUT)
        try:
            while self._serve_one(client):
                pass
        except OSError:
            pass  # the client went away (it timed out, or gave up): nothing to relay to
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _serve_one(self, client: socket.socket) -> bool:
        """Relay one request and its answer; whether the client's connection may carry another."""
        reader = _Reader(client)
        head = reader.until(b"\r\n\r\n")
        if head is None:
            return False
        request_line, headers = _parse_head(head)
        method, path = request_line.split(" ")[:2]
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise OSError("chunked request bodies are not relayed")
        body = reader.exactly(int(headers.get("content-length", "0")))
        rule = self._pick(method, path)
        if rule is not None and rule.mode in ("drop", "reset"):
            _close(client, reset=rule.mode == "reset")
            return False
        upstream = socket.create_connection(self._target, timeout=_IO_TIMEOUT)
        try:
            upstream.sendall(_with_close(head) + body)
            if rule is None:
                _relay(upstream, client)
                return False
            answer = _closing(_read_all(upstream))
        finally:
            upstream.close()
        if rule.mode in ("drop_answer", "reset_answer"):
            _close(client, reset=rule.mode == "reset_answer")
        elif rule.mode == "truncate":
            split = answer.find(b"\r\n\r\n") + 4
            cut = split + max(1, (len(answer) - split) // 2)
            client.sendall(answer[: min(cut, len(answer) - 1)])
            _close(client, reset=False)
        else:  # delay
            time.sleep(rule.delay)
            client.sendall(answer)
        return False


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def until(self, marker: bytes) -> bytes | None:
        while marker not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
        head, _, self._buffer = self._buffer.partition(marker)
        return head + marker

    def rest(self) -> bytes:
        data, self._buffer = self._buffer, b""
        return data

    def exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise OSError("the client closed the connection inside a request body")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _with_close(head: bytes) -> bytes:
    """A request's or answer's head saying the connection closes after this exchange: the proxy uses one
    connection per request, and a client must not find one it thinks open closed under its next request."""
    lines = [line for line in head.split(b"\r\n") if line and not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close", b"", b""])


def _relay(source: socket.socket, sink: socket.socket) -> None:
    """The answer from ``source`` to ``sink`` as it comes, saying the connection closes after it."""
    reader = _Reader(source)
    head = reader.until(b"\r\n\r\n")
    if head is not None:
        sink.sendall(_with_close(head) + reader.rest())
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    _close(sink, reset=False)


def _closing(answer: bytes) -> bytes:
    """A whole answer saying the connection closes after it: a client must not send on it again."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    return _with_close(head + sep) + body if sep else answer


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _close(sock: socket.socket, reset: bool) -> None:
    """Close ``sock``: a FIN after what was sent, or with ``reset`` a RST that discards it."""
    with contextlib.suppress(OSError):
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_WR)
    sock.close()


# -- a real kernel, and figures: shared by the fault tests ------------------------------------------


class Kernel:
    """A dli_pyspark kernel started by jupyter_client, with the environment ``kernel_environment`` made."""

    def __init__(self, env: dict[str, str], kernels: str) -> None:
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        self.manager = KernelManager(
            kernel_name="dli_pyspark", kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels])
        )
        self.manager.start_kernel(env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def execute(self, code: str, timeout: float = 180) -> tuple[dict[str, Any], str]:
        """The cell's reply, and its text: stdout, results and the error's name and value."""
        messages: list[dict[str, Any]] = []
        reply = self.client.execute_interactive(code, output_hook=messages.append, timeout=timeout)
        text = []
        for message in messages:
            content = message["content"]
            if message["msg_type"] == "stream":
                text.append(content["text"])
            elif message["msg_type"] == "execute_result":
                text.append(content["data"].get("text/plain", ""))
            elif message["msg_type"] == "error":
                text.append(f"{content['ename']}: {content['evalue']}")
        return reply["content"], "".join(text)

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


def kernel_environment(url: str, token: str, root: Path) -> tuple[dict[str, str], str]:
    """The environment of a kernel that talks to ``url``, and where its kernel specs are."""
    from dli_kernel.install import install

    install(prefix=str(root))
    env = dict(os.environ)
    env.update(
        DLI_KERNEL_URL=url,
        DLI_KERNEL_DIALECT="local",
        DLI_KERNEL_TOKEN=token,
        JUPYTER_CONFIG_DIR=str(root / "config"),
        JUPYTER_RUNTIME_DIR=str(root / "runtime"),
    )
    return env, str(root / "share" / "jupyter" / "kernels")


def figure(line: str) -> None:
    """Figures for the README's limits and guarantees, appended to $RELIABILITY_FIGURES if set."""
    target = os.environ.get("RELIABILITY_FIGURES")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(line + "\n")
