"""Kernels driven through jupyter_client, timed from execute_request to execute_reply."""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager


@dataclass
class Cell:
    """One executed cell: how long the reply took and what came out."""

    seconds: float
    status: str  # the execute_reply's status, or "timeout"
    text: str = ""  # stdout, stderr and text/plain results, joined
    error: str = ""  # "ename: evalue" of an error reply or error output
    replied_at: float = 0.0  # time.perf_counter() when the execute_reply arrived

    @property
    def ok(self) -> bool:
        return self.status == "ok" and not self.error


@dataclass
class Kernel:
    """A kernel process from a kernelspec directory, with its own environment."""

    label: str
    name: str
    kernels_dir: Path
    env: dict[str, str]
    manager: KernelManager | None = field(default=None, init=False)
    client: Any = field(default=None, init=False)
    started_at: float = field(default=0.0, init=False)

    def start(self, ready_timeout: float = 120, attempts: int = 3) -> None:
        """Start the kernel; again if it died at once. jupyter_client picks the ports and the kernel binds
        them a moment later, and on a machine starting many Spark JVMs one of them may take a port first.
        The time counts from the first attempt."""
        specs = KernelSpecManager(kernel_dirs=[str(self.kernels_dir)])
        self.started_at = time.perf_counter()
        for attempt in range(1, attempts + 1):
            self.manager = KernelManager(kernel_name=self.name, kernel_spec_manager=specs)
            self.manager.start_kernel(env=self.env)
            self.client = self.manager.client()
            self.client.start_channels()
            try:
                self.client.wait_for_ready(timeout=ready_timeout)
                return
            except RuntimeError:  # "Kernel died before replying to kernel_info"
                self.client.stop_channels()
                self.manager.shutdown_kernel(now=True)
                if attempt == attempts:
                    raise

    @property
    def pid(self) -> int:
        return self.manager.provisioner.process.pid

    def run(self, code: str, timeout: float = 600) -> Cell:
        """Execute one cell; the time is from sending execute_request to receiving its execute_reply."""
        began = time.perf_counter()
        msg_id = self.client.execute(code, allow_stdin=False)
        deadline = began + timeout
        reply = None
        while reply is None:
            try:
                message = self.client.get_shell_msg(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                return Cell(time.perf_counter() - began, "timeout", error=f"no reply within {timeout:.0f} s")
            if message["parent_header"].get("msg_id") == msg_id:
                reply = message
        replied_at = time.perf_counter()
        seconds = replied_at - began
        text, error = self._outputs(msg_id, deadline=time.perf_counter() + 30)
        content = reply["content"]
        if content["status"] != "ok" and not error:
            error = f"{content.get('ename', content['status'])}: {content.get('evalue', '')}"
        return Cell(seconds, content["status"], text, error, replied_at)

    def _outputs(self, msg_id: str, deadline: float) -> tuple[str, str]:
        """What the cell printed, read from iopub up to its idle status (not part of the timing)."""
        texts, error = [], ""
        while time.perf_counter() < deadline:
            try:
                message = self.client.get_iopub_msg(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                texts.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                texts.append(str(content["data"].get("text/plain", "")))
            elif kind == "error":
                error = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                break
        return "".join(texts), error

    def shutdown(self) -> None:
        """Ask the kernel to stop (so it deletes its session), kill it if it does not."""
        if self.client is not None:
            self.client.stop_channels()
            self.client = None
        if self.manager is not None:
            manager, self.manager = self.manager, None
            # Deleting a session waits for its driver to stop: give it time before the kernel is killed.
            manager.shutdown_wait_time = 60
            if manager.has_kernel:
                manager.shutdown_kernel(now=False)
