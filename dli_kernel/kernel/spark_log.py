"""A session's log as a user wants to read it while a cell runs: Spark's warnings and errors one line each,
a stage's task failures folded into one line with a count, the user's own prints in full.

Pure text in, text out: no I/O, no dependencies, so the kernel's cell stream, ``%session logs --level``
and the ``dli-kernel sessions logs`` command all condense alike.

Levels (``LEVELS``): ``quiet`` shows nothing, ``warn`` (the default) Spark's WARN, ERROR and FATAL records
condensed and lines with no level in full, ``info`` INFO records too, ``all`` every line as it is.

A record is a log4j line (``yy/MM/dd HH:mm:ss LEVEL Logger: message``, the ISO-dated forms other Spark and
Livy builds write, the ``ts | LEVEL | [thread] | message | Logger (File:line)`` form, Python logging's
``LEVEL:logger:message``, or a structured JSON line) with the lines that continue it: a Java stack
trace (``\\tat ...``, ``Caused by: ...``, ``... N more``), a multi-line message, a Python traceback inside
the message. It becomes ``LEVEL Logger: message: Exception: its message``, the root cause's where short.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from dli_kernel.protocol import LOG_LEVELS

LEVELS = LOG_LEVELS  # ("quiet", "warn", "info", "all")

# How much of each log level a setting shows; a record below the threshold is hidden.
_RANK = {"TRACE": 0, "DEBUG": 1, "INFO": 2, "WARN": 3, "ERROR": 4, "FATAL": 5}
_SPELLINGS = {"WARNING": "WARN", "CRITICAL": "FATAL", "SEVERE": "ERROR"}
_THRESHOLD = {"warn": _RANK["WARN"], "info": _RANK["INFO"]}

MAX_DETAIL = 200  # characters of an exception's message kept on its line; the whole log has the rest
MAX_LINE = 320  # characters of a condensed line's message

_TS = (
    r"(?:\d{2}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}"
    r"|\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)"
)
_LEVEL = r"(TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL|SEVERE|CRITICAL)"
_LOG4J = re.compile(
    rf"^{_TS}\s+(?:\[[^\]]*\]\s+)?{_LEVEL}\s+(?:\[[^\]]*\]\s+)?([\w$.\-]+?)(?::\s|:$|\s+-\s)(.*)$"
)
_PIPES = re.compile(rf"^{_TS}\s*\|\s*{_LEVEL}\s*\|\s*(?:\[[^\]]*\]\s*\|\s*)?(.*?)\s*\|\s*([\w$.\-]+).*$")
_PYTHON_LOGGING = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):([\w.\-]+):(.*)$")

# A Java exception line: lower-case packages, a capitalised class ("org.apache.spark.SparkException: ...").
_JAVA_EXCEPTION = re.compile(
    r"^(?:Caused by: |Suppressed: )?((?:[a-z_$][\w$]*\.){1,30}[A-Z][\w$]*)(?::\s?(.*))?$"
)
_PY_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))(?::\s?(.*))?$")
# An exception named inside a message ("Lost task ...: org.apache.X: text"), by its class's full name; a
# bounded package depth keeps a search through a long dotted line linear.
_INLINE_EXCEPTION = re.compile(
    r"\b((?:[a-z_$][\w$]*\.){1,30}[A-Z][\w$]*(?:Exception|Error|Throwable))(?::\s?(.*))?$"
)
_CONTINUES = ("Caused by:", "Suppressed:", "Driver stacktrace:", "Traceback (most recent call last):")
_TRACE = ("\tat ", "\t... ", "Caused by: ", "\tSuppressed: ", "Suppressed: ", "\tCaused by: ")
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")

# Lines with no level that are Spark's (or Livy's) own start-up notes, not the user's: INFO, not prints.
_NOTES = (
    "Using Spark's default log4j profile",
    "Setting default log level to",
    "To adjust logging level use sc.setLogLevel",
    "WARNING: Using incubator modules",
    "stdout: ",
    "stderr: ",
    "YARN Diagnostics: ",
)

# A stage's tasks: the executor's and the scheduler's word for one failure, and the scheduler giving up.
_TASK_EXCEPTION = re.compile(r"^Exception in task (\d+(?:\.\d+)?) in stage (\d+(?:\.\d+)?) \(TID (\d+)\)")
_LOST_TASK = re.compile(
    r"^Lost task (\d+(?:\.\d+)?) in stage (\d+(?:\.\d+)?) \(TID (\d+)[^)]*\)(?: \([^)]*\))?: (.*)$"
)
_ABORTED = re.compile(r"^Task (\d+) in stage (\d+(?:\.\d+)?) failed (\d+) times?; aborting job")
# What follows a failure the user did not cause: tasks killed because their stage failed or was cancelled.
_DEMOTED = ("TaskKilled", "Incomplete task interrupted")
# PySpark 4's loggers that repeat the error a statement raises, which its cell shows anyway.
_ECHOES = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")


@dataclass
class _Record:
    """One levelled line and the lines that continue it."""

    level: str
    logger: str
    message: str
    lines: list[str] = field(default_factory=list)  # continuation lines, as they came
    done: bool = False  # shown (or hidden) already; later continuation lines only count as folded
    free_text: bool = False  # inside a "== SQL ==" context: any line continues until the stack trace
    known_exception: str = ""  # a structured line's exception, which it carries in a field of its own
    in_trace: bool = False  # its Java stack trace began: only trace lines continue it from now on

    def continues(self, line: str) -> bool:
        if not line.strip() or line[0] in " \t":
            return True
        if self.free_text:
            return True
        if line.startswith(_CONTINUES) or (line.startswith("== ") and line.rstrip().endswith(" ==")):
            self.free_text = line.startswith("== ")
            return True
        if _JAVA_EXCEPTION.match(line):
            return True
        return self.has_traceback() and bool(_PY_EXCEPTION.match(line))

    def continues_later(self, line: str) -> bool:
        """Whether a line of a later batch continues this record, shown already: an exception or a stack
        trace line, or any line ``continues`` takes while the record's message goes on (a Python traceback
        or SQL context in it). An indented line after a bare warning or a Java stack trace is a print."""
        sure = line.startswith((*_TRACE, *_CONTINUES)) or bool(_JAVA_EXCEPTION.match(line))
        in_message = not self.in_trace and (
            self.has_traceback() or any(continued.strip() for continued in self.lines)
        )
        return (sure or in_message) and self.continues(line)

    def add(self, line: str) -> None:
        if line.startswith("\tat "):
            self.free_text, self.in_trace = False, True
        self.lines.append(line)

    def has_traceback(self) -> bool:
        return any("Traceback (most recent call last)" in line for line in [self.message, *self.lines[:3]])

    def exception(self) -> str:
        """``Class: message`` of the record's exception (its root cause's where short); "" if none."""
        if self.known_exception:
            return self.known_exception
        found: list[tuple[str, str]] = []  # (class, message) of the exception and each cause, in order
        inline = _INLINE_EXCEPTION.search(self.message)
        if inline:
            found.append((inline.group(1), inline.group(2) or ""))
        first = self.lines[0] if self.lines else ""
        match = _JAVA_EXCEPTION.match(first)
        if match and not found and not first.startswith(("Caused by:", "Suppressed:")):
            found.append((match.group(1), match.group(2) or ""))
        for line in self.lines:
            cause = _JAVA_EXCEPTION.match(line) if line.startswith("Caused by: ") else None
            if cause:
                found.append((cause.group(1), cause.group(2) or ""))
        if not found:
            return ""
        name, detail = found[0]
        if len(found) > 1 and len(found[-1][1]) <= MAX_DETAIL:
            name, detail = found[-1]
        if "Traceback (most recent call last)" in detail:
            detail = self._python_error() or detail
        return _short(name, detail)

    def _python_error(self) -> str:
        """The last line of a Python traceback carried in the message (a Python worker's error)."""
        last = ""
        for line in self.lines:
            if line.startswith("\tat "):
                break
            if _PY_EXCEPTION.match(line):
                last = line.strip()
        return last


@dataclass
class _Stage:
    """The failed (and killed) tasks of one stage, folded into one line."""

    stage: str
    level: str
    error: str = ""  # the first failed task's exception, which the fold's line names
    kill_reason: str = ""  # why tasks were killed, where none failed
    failed: set[str] = field(default_factory=set)
    killed: set[str] = field(default_factory=set)
    errors: set[str] = field(default_factory=set)
    aborted: bool = False
    reported: tuple[int, int] = (0, 0)  # the failed and killed tasks the lines shown so far have counted

    def count(self) -> tuple[int, int]:
        return len(self.failed), len(self.killed - self.failed)

    def line(self) -> str | None:
        """The fold's count, or None if the lines shown so far already say it (an abort alone adds
        nothing: the cell's own error follows)."""
        if self.count() == self.reported:
            return None
        self.reported = failed, killed = self.count()
        if not failed:
            what = f"{_tasks(killed)} killed in stage {self.stage}"
            return f"{self.level} TaskSetManager: {what}" + (
                f": {self.kill_reason}" if self.kill_reason else ""
            )
        what = f"{_tasks(failed)} failed in stage {self.stage}"
        if killed:
            what += f" ({killed} more killed)"
        if self.aborted:
            what += ", job aborted"
        others = len(self.errors - {self.error})
        if others:
            what += f" (and {others} other error{'s' if others != 1 else ''})"
        return f"{self.level} TaskSetManager: {what}: {self.error}" if self.error else f"{self.level} {what}"


def checked_level(level: str) -> str:
    """``level`` if it is one of ``LEVELS``; else a ValueError that names them."""
    if level not in LEVELS:
        raise ValueError(f"the log level must be one of {', '.join(LEVELS)} (got {level!r}).")
    return level


class LogFolder:
    """Folds one statement's log lines as they stream in: ``feed`` says what to show now, ``flush`` what is
    left at the statement's end (the counts of folds still open)."""

    def __init__(self, level: str = "warn") -> None:
        self.level = checked_level(level)
        self.fed = 0  # lines fed
        self.shown = 0  # lines fed that were shown, each as itself or condensed to one line
        self._record: _Record | None = None  # the last record, open to continuation lines
        self._traceback: list[str] | None = None  # an unlevelled Python traceback being read
        self._traceback_ended = False  # its last line came: only a chained traceback may continue it
        self._stages: dict[str, _Stage] = {}
        self._repeat: tuple[tuple[str, str, str], int] | None = None  # the last shown record's key, repeats

    @property
    def folded(self) -> int:
        """Lines fed that were not shown as lines of their own (hidden, or folded into another line)."""
        return self.fed - self.shown

    def feed(self, lines: list[str]) -> list[str]:
        """What to show of these new lines now. A record is shown at the end of its batch, as a warning
        must not wait for the next line; the next batch's lines that surely continue it still fold into it
        (the log is read while it is written, so a batch may end anywhere in a stack trace)."""
        self.fed += len(lines)
        if self.level == "all":
            self.shown += len(lines)
            return [line.rstrip("\n") for line in lines]
        if self.level == "quiet":
            return []
        out: list[str] = []
        for raw in lines:
            self._line(raw.rstrip("\n"), out)
        self._end_record(out)
        if self._traceback is not None and self._traceback_ended:  # else it waits for its error line
            self._end_traceback(out)
        return out

    def flush(self) -> list[str]:
        """What is left at the statement's end: the counts of the folds still open."""
        out: list[str] = []
        if self.level in ("quiet", "all"):
            return out
        self._end_record(out)
        self._end_traceback(out)
        self._close_folds(out)
        self._stages.clear()
        return out

    def note(self, command: str = "%session logs", lines_by_default: int = 50) -> list[str]:
        """One line saying how many lines were condensed and how to see them all; none if none were, or if
        nothing was shown (a cell whose log held only lines below its level stays quiet: Jupyter paints
        any stderr red). ``command`` shows a log's last ``lines_by_default`` lines, and takes ``-n``."""
        if self.level in ("quiet", "all") or not self.folded or not self.shown:
            return []
        count = self.folded
        shows = command if self.fed <= lines_by_default else f"{command} -n {self.fed}"
        return [f"({count} log line{'s' if count != 1 else ''} condensed; {shows} shows them)"]

    # -- reading lines -------------------------------------------------------------------------------

    def _line(self, line: str, out: list[str]) -> None:
        header = _header(line)
        if header is not None:
            self._end_record(out)
            self._end_traceback(out)
            self._record = header
            return
        if self._traceback is not None:
            if self._traceback_continues(line):
                return
            self._end_traceback(out)
        record = self._record
        if record is not None and (record.continues_later(line) if record.done else record.continues(line)):
            record.add(line)
            return
        self._end_record(out)
        self._record = None
        if line.startswith("Traceback (most recent call last):"):
            self._traceback, self._traceback_ended = [line], False
        elif line.startswith(_CHAINED):  # the next traceback of a chain whose first a batch ago ended
            self._traceback, self._traceback_ended = [line], True
        elif not line.strip():
            pass  # a blank line carries nothing
        elif line.startswith(_TRACE):
            pass  # a trace with no level (printStackTrace) or begun before the lines read: its head says it
        elif line.startswith(_NOTES):
            self._record = _Record("INFO", "", line.strip())
        else:
            self._close_folds(out)
            self._show(out, line)  # the user's own print: in full

    def _traceback_continues(self, line: str) -> bool:
        assert self._traceback is not None
        if not self._traceback_ended:
            self._traceback.append(line)
            # A traceback's frames are indented; its first unindented line is the exception, its last.
            self._traceback_ended = bool(line.strip()) and line[0] not in " \t"
            return True
        if not line.strip() or line.startswith(_CHAINED) or line.startswith("Traceback (most recent"):
            self._traceback.append(line)
            self._traceback_ended = not line.startswith("Traceback")
            return True
        return False

    def _end_traceback(self, out: list[str]) -> None:
        if self._traceback is None:
            return
        lines, self._traceback = self._traceback, None
        ends = [line for line in lines if line.strip() and line[0] not in " \t"]
        ends = [line for line in ends if not line.startswith((*_CHAINED, "Traceback"))] or lines
        self._close_folds(out)
        self._show(out, ends[-1].strip())

    def _end_record(self, out: list[str]) -> None:
        record = self._record
        if record is None or record.done:
            return
        record.done = True
        threshold = _THRESHOLD[self.level]
        level = record.level
        echo = record.logger in _ECHOES or any(word in record.message for word in _DEMOTED)
        if echo and _RANK[level] > _RANK["INFO"]:
            level = "INFO"
        if _RANK[level] < threshold:
            return
        if self._task(record, level, out):
            return
        self._close_stages(out)
        text = _condensed(record, level)
        key = (level, record.logger, re.sub(r"\d+", "#", record.message))
        if self._repeat is not None and self._repeat[0] == key:
            self._repeat = (key, self._repeat[1] + 1)
            return
        self._show(out, text)
        self._repeat = (key, 0)

    # -- folds ---------------------------------------------------------------------------------------

    def _task(self, record: _Record, level: str, out: list[str]) -> bool:
        """Fold a task failure (or a stage's abort) into its stage's line; False if it is neither."""
        message = record.message
        exception = record.exception()
        match = _TASK_EXCEPTION.match(message) or _LOST_TASK.match(message)
        if match:
            stage_id, tid = match.group(2), match.group(3)
            if not exception and match.re is _LOST_TASK:
                exception = _cut(match.group(4), MAX_DETAIL)
        else:
            aborted = _ABORTED.match(message)
            if not aborted or aborted.group(2) not in self._stages:
                return False
            failed = self._stages[aborted.group(2)]
            failed.aborted = True
            failed.level = _higher(failed.level, level)
            return True
        self._close_stages(out, keep=stage_id)  # another stage's failures: those folds are complete
        stage = self._stages.get(stage_id)
        first = stage is None
        if stage is None:
            self._close_repeat(out)
            stage = self._stages[stage_id] = _Stage(stage_id, level)
            self._show(out, _condensed(record, level))  # the first failure at once; the count when done
        if "TaskKilled" in message:
            stage.killed.add(tid)
            stage.kill_reason = stage.kill_reason or exception
        else:
            stage.failed.add(tid)
            stage.level = _higher(stage.level, level)
            stage.error = stage.error or exception
            if exception:
                stage.errors.add(exception)
        if first:
            stage.reported = stage.count()
        return True

    def _close_folds(self, out: list[str]) -> None:
        self._close_repeat(out)
        self._close_stages(out)

    def _close_stages(self, out: list[str], keep: str | None = None) -> None:
        for stage in self._stages.values():
            line = stage.line() if stage.stage != keep else None
            if line is not None:
                out.append(line)

    def _close_repeat(self, out: list[str]) -> None:
        if self._repeat is not None and self._repeat[1]:
            count = self._repeat[1]
            out.append(f"  (and {count} more like it)")
        self._repeat = None

    def _show(self, out: list[str], line: str) -> None:
        if self._repeat is not None:
            self._close_repeat(out)
        out.append(line)
        self.shown += 1


def condense(lines: list[str], level: str) -> list[str]:
    """A whole log condensed at ``level`` (one of ``LEVELS``): what a statement's stream would show."""
    folder = LogFolder(level)
    return folder.feed(lines) + folder.flush()


# -- parts of a line -------------------------------------------------------------------------------


def _header(line: str) -> _Record | None:
    """The record a levelled line begins; None for a line with no level."""
    if line.startswith("{") and line.rstrip().endswith("}"):
        return _json_record(line)
    match = _LOG4J.match(line)
    if match:
        level, logger, message = match.groups()
    elif (match := _PIPES.match(line)) is not None:
        level, message, logger = match.groups()
    elif (match := _PYTHON_LOGGING.match(line)) is not None:
        level, logger, message = match.groups()
    else:
        return None
    return _Record(_SPELLINGS.get(level, level), _short_logger(logger), message.strip())


def _json_record(line: str) -> _Record | None:
    """A structured log line (Spark's ``spark.log.structuredLogging.enabled``, PySpark's ``PySparkLogger``):
    ``{"ts", "level", "logger", "msg", "exception": {"class", "msg", "stacktrace"}}`` on one line."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than any log line is
        return None
    if not isinstance(value, dict) or not isinstance(value.get("msg"), str):
        return None
    level = str(value.get("level", "")).upper()
    level = _SPELLINGS.get(level, level)
    if level not in _RANK:
        return None
    record = _Record(level, _short_logger(str(value.get("logger") or "")), value["msg"].strip())
    exception = value.get("exception")
    if isinstance(exception, dict) and exception.get("class"):
        detail = str(exception.get("msg") or "").strip().splitlines()
        record.known_exception = _short(str(exception["class"]), detail[0] if detail else "")
        # A Py4J error carries the Java exception and its trace in its message: name that instead.
        java = [m for m in (_JAVA_EXCEPTION.match(line.lstrip(": ")) for line in detail[1:]) if m]
        if java:
            root = java[-1] if len(java[-1].group(2) or "") <= MAX_DETAIL else java[0]
            record.known_exception = _short(root.group(1), root.group(2) or "")
    return record


def _short_logger(logger: str) -> str:
    return logger.rsplit(".", 1)[-1]


def _condensed(record: _Record, level: str) -> str:
    message = record.message
    exception = record.exception()
    inline = _INLINE_EXCEPTION.search(message)
    if inline and exception:
        message = message[: inline.start()] + exception  # the message ends with its exception, shortened
    elif exception and message and exception.partition(": ")[2][:60] in message:
        message = f"{message} ({exception.partition(': ')[0]})"  # the message says the exception's text
    elif exception:
        message = f"{message.rstrip(':')}: {exception}" if message else exception
    message = _cut(message, MAX_LINE)
    return f"{level} {record.logger}: {message}" if record.logger else message


def _short(name: str, detail: str) -> str:
    name = name.rsplit(".", 1)[-1]
    detail = _cut(detail, MAX_DETAIL)
    return f"{name}: {detail}" if detail else name


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _tasks(count: int) -> str:
    return f"{count} task{'s' if count != 1 else ''}"


def _higher(a: str, b: str) -> str:
    return a if _RANK[a] >= _RANK[b] else b
