"""Scala statements inside a session's driver: the Scala REPL engine in the JVM pyspark started.

``scala_repl.scala`` (next to this file) is a small JVM class around Scala's own interpreter (IMain, from
the scala-compiler jar that pyspark ships). It is compiled once per Scala/Spark version with that same
compiler into a per-user cache and loaded into the driver's JVM the first time a session runs Scala, so a
Python-only session never pays for it. User code reaches it as a py4j string argument, answers come
back as JSON; the functions at the bottom turn those answers into Livy's text and error outputs.

This module runs inside the driver kernel (it needs the SparkSession's py4j gateway) except for its pure
functions, which the unit tests import on their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from py4j.protocol import Py4JJavaError

SOURCE = Path(__file__).with_name("scala_repl.scala")
HELPER_CLASS = "dlikernel.repl.Interpreter"
REPL_CLASSES_DIR = "repl-classes"  # in the driver's working directory, the session's workdir
STOP_AFTER_MS = 2000  # how long an interrupted statement may take to end before its thread is stopped


class ScalaUnavailable(RuntimeError):
    """The Scala interpreter could not be started in this driver; the message says why."""


# -- the interpreter, one per driver ---------------------------------------------------------------


class ScalaInterpreter:
    """The JVM interpreter of one session, with ``spark`` and ``sc`` bound to its SparkSession."""

    def __init__(self, spark: Any, output_dir: str) -> None:
        started = time.monotonic()
        gateway = spark.sparkContext._gateway
        jvm = spark._jvm
        classes, compiled_in = _helper_classes(jvm, gateway, spark.version)
        urls = gateway.new_array(jvm.java.net.URL, 1)
        urls[0] = jvm.java.io.File(str(classes)).toURI().toURL()
        loader = jvm.java.net.URLClassLoader(
            urls, jvm.java.lang.Thread.currentThread().getContextClassLoader()
        )
        helper = jvm.java.lang.Class.forName(HELPER_CLASS, True, loader)
        arguments = gateway.new_array(jvm.java.lang.Object, 3)
        arguments[0], arguments[1], arguments[2] = output_dir, _user_jars(spark), spark._jsparkSession
        # py4j cannot name a class from our own class loader, so the constructor is called by reflection.
        self._helper = helper.getConstructors()[0].newInstance(arguments)
        self.start_seconds = time.monotonic() - started
        self.compile_seconds = compiled_in

    def run(self, code: str, job_group: str) -> dict[str, Any]:
        return json.loads(self._helper.run(code, job_group))

    def cancel(self) -> None:
        self._helper.cancel(STOP_AFTER_MS)

    def complete(self, code: str, cursor: int) -> dict[str, Any]:
        return json.loads(self._helper.complete(code, cursor))


_interpreter: ScalaInterpreter | None = None
_starting = threading.Lock()
busy = threading.Event()  # set while the kernel waits on the JVM for Scala work (see runtime's SIGINT)


def interpreter(spark: Any) -> ScalaInterpreter:
    """The session's interpreter, started on first use; its start time goes to the session log."""
    global _interpreter
    with _starting:
        if _interpreter is None:
            output_dir = spark.sparkContext.getConf().get("spark.repl.class.outputDir", None)
            if not output_dir:
                raise ScalaUnavailable(
                    "this driver was started without spark.repl.class.outputDir; start a new session "
                    "to run Scala."
                )
            try:
                _interpreter = ScalaInterpreter(spark, output_dir)
            except Py4JJavaError as err:
                cause = err.java_exception
                while cause.getCause() is not None:
                    cause = cause.getCause()
                raise ScalaUnavailable(f"the Scala interpreter did not start: {cause.toString()}") from None
            compiled = (
                f" (its helper compiled in {_interpreter.compile_seconds:.1f} s)"
                if _interpreter.compile_seconds
                else ""
            )
            _log(f"Scala interpreter started in {_interpreter.start_seconds:.1f} s{compiled}")
        return _interpreter


def cancel_running() -> None:
    """Interrupt the running Scala statement, if any (stopping its thread if it ignores interrupts)."""
    if _interpreter is not None:
        _interpreter.cancel()


def _log(message: str) -> None:
    stamp = time.strftime("%y/%m/%d %H:%M:%S")
    log = sys.__stderr__  # the driver's own stderr, which the server writes to the session log
    if log is not None:
        log.write(f"{stamp} INFO dli-kernel: {message}\n")
        log.flush()


def _user_jars(spark: Any) -> str:
    """The session's jars, for the compiler: the REPL must compile against what it can load."""
    return os.pathsep.join(local_jar_paths(spark.sparkContext.getConf().get("spark.jars", "") or ""))


def local_jar_paths(spark_jars: str) -> list[str]:
    """The local files among ``spark.jars`` (plain paths and ``file:`` URLs); remote ones are skipped,
    as the compiler reads only local files (Spark still ships them to the executors)."""
    paths = []
    for jar in filter(None, (entry.strip() for entry in spark_jars.split(","))):
        url = urlparse(jar)
        path = unquote(url.path) if url.scheme == "file" else jar if not url.scheme else None
        if path and os.path.isfile(path):
            paths.append(path)
    return paths


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dli-kernel" / "scala"


def _helper_classes(jvm: Any, gateway: Any, spark_version: str) -> tuple[Path, float]:
    """The compiled helper's directory, and how long compiling it took (0 when it came from the cache).

    The cache key covers the source and the Scala and Spark versions, so an upgrade compiles afresh;
    two drivers compiling at once each write their own directory and the first rename wins.
    """
    versions = f"Scala {jvm.scala.util.Properties.versionNumberString()}, Spark {spark_version}"
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + versions.encode()).hexdigest()[:16]
    target = cache_root() / key
    if (target / "dlikernel" / "repl" / "Interpreter.class").exists():
        return target, 0.0
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=target.parent))
    try:
        arguments = ["-usejavacp", "-nowarn", "-d", str(scratch), str(SOURCE)]
        array = gateway.new_array(jvm.java.lang.String, len(arguments))
        for i, argument in enumerate(arguments):
            array[i] = argument
        if not jvm.scala.tools.nsc.Main.process(array):
            raise ScalaUnavailable(
                f"the Scala interpreter's helper did not compile with {versions}; "
                "the compiler's messages are in the session log."
            )
        try:
            scratch.rename(target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target, time.monotonic() - started


# -- answers as Livy outputs (pure) ---------------------------------------------------------------


@dataclass
class ScalaFailure:
    """A failed Scala statement as Livy's error output."""

    ename: str
    evalue: str
    traceback: list[str]


def livy_echo(echo: str, defined: list[str]) -> str:
    """The REPL's echo as Livy prints it: ``res0: Int = 2``, not Scala 2.13's ``val res0: Int = 2``.

    Only the echo lines of names the statement defined lose their ``val``/``var``, in order, so a value
    whose text happens to contain such a line keeps it.
    """
    position = 0
    for name in defined:
        header = re.compile(rf"^(?:val|var) (?=`?{re.escape(name)}`?: )", re.MULTILINE)
        match = header.search(echo, position)
        if match:
            echo = echo[: match.start()] + echo[match.end() :]
            position = match.start()
    return echo


def caret_line(line_content: str, column: int) -> str:
    """A caret under ``column`` (1-based), keeping the tabs of the line so it lines up as printed."""
    lead = line_content[: max(column - 1, 0)]
    return "".join("\t" if char == "\t" else " " for char in lead) + "^"


def problem_lines(problems: list[dict[str, Any]]) -> list[str]:
    """Compiler messages as scalac prints them: ``<console>:LINE: error: message``, the line, a caret."""
    lines: list[str] = []
    for problem in problems:
        first, _, rest = problem["message"].partition("\n")
        lines.append(f"<console>:{problem['line']}: {problem['severity']}: {first}")
        lines.extend(rest.splitlines())
        lines.append(problem["line_content"])
        lines.append(caret_line(problem["line_content"], problem["column"]))
    return lines


def outcome(answer: dict[str, Any]) -> tuple[str, ScalaFailure | None]:
    """A cell's text (per statement: warnings, printed output, the REPL echo) and its failure, if any.

    Traceback lines carry no newline: the driver turns them into Livy's newline-ended lines.
    """
    text = ""
    errors: list[dict[str, Any]] = []
    for step in answer.get("steps", []):
        warnings = [p for p in step.get("problems", []) if p["severity"] != "error"]
        errors = [p for p in step.get("problems", []) if p["severity"] == "error"]
        text += "".join(line + "\n" for line in problem_lines(warnings)) + step.get("output", "")
        text += livy_echo(step.get("echo", ""), step.get("defined", []))
    status = answer["status"]
    if status == "ok":
        return text, None
    if status == "cancelled":
        return text, CANCELLED
    exception = answer.get("exception")
    if exception:
        ename, evalue = (
            (exception["class"], exception["message"])
            if "class" in exception
            else exception_name(exception["trace"])
        )
        return text, ScalaFailure(ename, evalue, exception["trace"].splitlines())
    if errors:
        return text, ScalaFailure("CompileError", errors[0]["message"], problem_lines(errors))
    if status == "incomplete":
        return text, ScalaFailure(
            "CompileError", "incomplete input: the code ends in the middle of a statement", []
        )
    # The REPL reported the error without a position in the user's code (e.g. in code it generated):
    # its own text is all there is.
    lines = text.strip("\n").splitlines() or ["the statement failed"]
    return "", ScalaFailure("CompileError", lines[0].strip(), lines)


_RESULT_NAME = re.compile(r"res[0-9]+")


def value_echo(answer: dict[str, Any]) -> str | None:
    """The echo of the cell's value, the end of its text: its last statement's ``res3: Int = 42`` when
    that statement was an expression (the REPL named its value ``resN``); None otherwise (a definition,
    a statement without a value, a failure), when the text stays as it is.

    Only an echo that ends in exactly one newline qualifies: a notebook shows the value without it, and
    Livy's text, made again of the printed text and the value, stays the same.
    """
    steps = answer.get("steps") or []
    if answer.get("status") != "ok" or not steps:
        return None
    last = steps[-1]
    defined = last.get("defined") or []
    if len(defined) != 1 or not _RESULT_NAME.fullmatch(defined[0]):
        return None
    echo = livy_echo(last.get("echo", ""), defined)
    if not echo.startswith(f"{defined[0]}: ") or not echo.endswith("\n") or echo.endswith("\n\n"):
        return None
    return echo


class ScalaValue:
    """A Scala cell's value as the driver kernel shows it: its REPL echo, as the statement's result."""

    def __init__(self, echo: str) -> None:
        self.echo = echo

    def __repr__(self) -> str:
        return self.echo

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # IPython would split a repr into lines and join them with "\n": a value holding "\r\n" would
        # then differ from the REPL's text, and Livy's text, made again of the outputs, from before.
        printer.text(self.echo)


_FRAME = re.compile(r"^\s+(?:at |\.\.\. \d+ (?:elided|more))")


def exception_name(trace: str) -> tuple[str, str]:
    """Class and message from a printed Java stack trace, for when the exception itself is out of reach.

    Its head is ``Throwable.toString()``, ``class: message`` (the message may span lines) or the bare
    class, until the first frame line.
    """
    head: list[str] = []
    for line in trace.splitlines():
        if _FRAME.match(line):
            break
        head.append(line)
    ename, _, evalue = "\n".join(head).partition(": ")
    if re.fullmatch(r"[\w$.]+", ename):
        return ename, evalue
    return "Exception", "\n".join(head)


CANCELLED = ScalaFailure("StatementCancelled", "the statement was cancelled", [])


class ScalaError(Exception):
    """A failed Scala statement raised in the driver kernel, so Jupyter reports it as an error.

    The kernel names an error after its Python class, so each Scala exception class gets a subclass of
    that name (``java.lang.ArithmeticException``); the traceback is the Scala one, not Python frames.
    """

    def __init__(self, failure: ScalaFailure) -> None:
        super().__init__(failure.evalue)
        self.failure = failure

    def _render_traceback_(self) -> list[str]:
        return self.failure.traceback or [f"{self.failure.ename}: {self.failure.evalue}"]


@cache
def error_class(ename: str) -> type[ScalaError]:
    return type(ename, (ScalaError,), {"__module__": __name__})
