"""Code that runs *inside* a session's driver process (an IPython kernel holding a SparkSession).

The manager asks the kernel to run ``bootstrap`` once and ``run_sql`` for SQL statements, and reads
the progress file this module writes. Keep it importable without the rest of the server.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import decimal
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython import get_ipython
from IPython.display import display

from dli_kernel.driver import scala_repl
from dli_kernel.driver.arrow_results import row_count
from dli_kernel.processes import ProcessId, descendants, process_id, process_table
from dli_kernel.protocol import DEFAULT_MAX_ROWS, LIVY_TABLE_MIME, PROGRESS_FILE, SQL_RESULT_MIME, job_group

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PROGRESS_INTERVAL = 0.25
# Clients show progress once a statement has run a second; before that, asking Spark would only cost a
# quick statement JVM calls, which on a busy machine wait for the JVM to get a core.
PROGRESS_FIRST = 1.0

_spark: SparkSession | None = None
_shared = False  # attached to a shared driver's JVM (``attach``), rather than running one of its own


def _session() -> SparkSession:
    if _spark is None:
        raise RuntimeError("the driver's SparkSession is not started: bootstrap() runs first")
    return _spark


def bootstrap(settings_json: str) -> str:
    """Create the SparkSession, bind ``spark``/``sc`` and hook statements; return app info as JSON."""
    global _spark
    from pyspark.sql import SparkSession

    settings = json.loads(settings_json)
    conf = dict(settings["conf"])
    # Classes the Scala interpreter compiles go here, and executors fetch them through the URI Spark
    # derives from it when the context starts; set for every session, as it cannot be added later.
    repl_classes = Path(
        conf.setdefault("spark.repl.class.outputDir", str(Path.cwd() / scala_repl.REPL_CLASSES_DIR))
    )
    repl_classes.mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder.master(settings["master"]).appName(settings["app_name"])
    for key, value in conf.items():
        builder = builder.config(key, value)
    _spark = builder.getOrCreate()
    # Only spark-submit ships spark.submit.pyFiles to executors; a context built with it in its conf
    # copies them to the driver alone, which local mode hides (its executors are the driver).
    for py_file in filter(None, conf.get("spark.submit.pyFiles", "").split(",")):
        _spark.sparkContext.addPyFile(py_file)
    _hook_shell(_spark)
    return app_info()


def attach(settings_json: str) -> str:
    """Connect to a shared driver's JVM (``{"gateway": {"port", "secret"}, "key"}``, see ``shared``), bind
    ``spark``/``sc`` and hook statements as ``bootstrap`` does; return the shared app's info as JSON."""
    global _spark, _shared
    from dli_kernel.driver import shared

    _spark = shared.attach(settings_json)
    _shared = True
    _hook_shell(_spark)
    return json.dumps({**json.loads(app_info()), "sharedDriver": True})


def _hook_shell(spark: SparkSession) -> None:
    """What makes the IPython shell a session's driver, once its SparkSession exists."""
    _adopt_orphans()
    shell = get_ipython()
    # Plain tracebacks: Livy clients show them as text, ANSI colours would be noise.
    shell.colors = "nocolor"
    shell.user_ns.update(spark=spark, sc=spark.sparkContext)
    warnings.showwarning = _warning_to_log
    _query_context_to_log()
    shell.set_custom_exc(_spark_errors(), _user_frames_traceback)
    for name, magic in (("table", _table_magic), ("json", _json_magic), ("matplot", _matplot_magic)):
        shell.register_magic_function(magic, magic_kind="line", magic_name=name)
    shell.events.register("pre_run_cell", _before_statement)
    shell.events.register("post_run_cell", _after_statement)


def _warning_to_log(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """Warnings go to the session log, not into a statement's text: Livy clients (sparkmagic's %%sql,
    the `livy` package's download) parse that text, and a pyspark deprecation warning breaks them."""
    log = sys.__stderr__  # the driver's own stderr, which the server writes to the session log
    if log is not None:
        log.write(warnings.formatwarning(message, category, filename, lineno, line))
        log.flush()


def _query_context_to_log() -> None:
    """PySpark 4 logs a failing query's error again, as a JSON line, through its query context loggers on
    stderr, which in this kernel is the statement's output: it goes to the session log instead, where a
    cell's log level condenses it (the statement's own error says the same)."""
    try:
        from pyspark.logger import PySparkLogger
    except ImportError:  # PySpark before 4 has no such loggers
        return
    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        for handler in PySparkLogger.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and sys.__stderr__ is not None:
                handler.setStream(sys.__stderr__)


def _spark_errors() -> tuple[type[BaseException], ...]:
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return (PySparkException, Py4JError)


def _library_dirs() -> tuple[str, ...]:
    import py4j
    import pyspark

    return tuple(str(Path(module.__file__ or "").parent) + os.sep for module in (pyspark, py4j))


def _user_frames_traceback(
    shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None
) -> Any:
    """A failing Spark call's traceback without pyspark's and py4j's own frames: those are dozens of lines,
    with the server's paths, above the one line that says what went wrong (a missing table, a bad column).
    The user's frames and the error's message (a UDF's remote traceback included) stay. IPython leaves
    showing it to the handler."""
    tb = _without_frames_in(tb, _library_dirs())
    shown = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset)
    shell._showtraceback(etype, value, shown)
    return shown


def _without_frames_in(head: Any, dirs: tuple[str, ...]) -> Any:
    kept, tb = [], head
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(dirs):
            kept.append(tb)
        tb = tb.tb_next
    for frame, following in zip(kept, [*kept[1:], None], strict=True):
        frame.tb_next = following  # writable since Python 3.7: the chain is the one being shown
    return kept[0] if kept else head


def app_info() -> str:
    sc = _session().sparkContext
    # The JVM's pid lets the server tell a driver whose JVM died from one that is merely busy.
    jvm: Any = sc._jvm
    jvm_pid = int(jvm.java.lang.ProcessHandle.current().pid())
    return json.dumps({"appId": sc.applicationId, "sparkUiUrl": sc.uiWebUrl, "jvmPid": jvm_pid})


# -- processes the session's code starts ---------------------------------------------------------------

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
ORPHAN_REAP_EVERY = 5.0
ORPHAN_REAPER = "dli-orphan-reaper"  # the thread's name


def _adopt_orphans() -> None:
    """Make this kernel the child subreaper of what it starts (Linux): a process the session's code
    starts and leaves behind (a double fork, a daemon) is re-parented to the kernel rather than to init,
    so the server, which stops every process below the kernel, finds it when the session ends."""
    if not sys.platform.startswith("linux") or any(t.name == ORPHAN_REAPER for t in threading.enumerate()):
        return  # not Linux, or done by an earlier bootstrap of this kernel
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    threading.Thread(target=_reap_adopted, name=ORPHAN_REAPER, daemon=True).start()


def _reap_adopted() -> None:
    """Collect the exit of adopted orphans, which would otherwise stay zombies of the kernel.

    Only processes first seen further down the tree are waited for: a child the code started itself is
    its own to wait for (``subprocess`` would get no exit status if we took it first). A process is
    (pid, start time), so a pid reused by a new child of the code is never taken for an orphan.
    """
    me = os.getpid()
    adoptable: set[ProcessId] = set()  # seen below us, not as our children
    while True:
        table = process_table(zombies=True)
        children = {(pid, start) for pid, (parent, start) in table.items() if parent == me}
        for pid, _ in children & adoptable:
            if process_id(pid) is None:  # a zombie: it exited, and nobody else will wait for it
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
        present = {(pid, start) for pid, (_, start) in table.items()}
        adoptable = (adoptable & present) | (descendants(me, table) - children)
        time.sleep(ORPHAN_REAP_EVERY)


def executor_count() -> int:
    """How many executors have registered with the driver (the driver's own block manager not counted).

    On a cluster master the SparkContext starts before the cluster has granted anything; a session whose
    request no worker can satisfy would otherwise look ready and hang on its first job.
    """
    return int(_session().sparkContext._jsc.sc().getExecutorMemoryStatus().size()) - 1


class _StatementWatch:
    """What the driver does around one statement, so that cancel and progress work while it runs.

    - Its Spark jobs get a job group named after the request, so they can be found and cancelled.
    - SIGINT (the manager's cancel) cancels that group from another thread. If the statement is waiting
      on the JVM, we let the Spark call fail with "job cancelled" instead of raising in the middle of
      py4j's read, which would leave its connection holding an answer nobody reads; a second SIGINT, or
      plain Python code, gets KeyboardInterrupt. ipykernel installs Python's default SIGINT handler for
      each request; this runs inside the request, after that, so ours wins until the request ends.
    - A thread writes the group's task counts to ``progress.json`` for the manager to read.
    """

    def __init__(self, sc: Any, group: str) -> None:
        self.sc, self.group = sc, group
        self.interrupts = 0
        self.starting = False
        self.done = threading.Event()
        self.progress = threading.Thread(target=self._write_progress, name="dli-progress", daemon=True)

    def start(self) -> None:
        # Our handler first: an interrupt landing in the lines below must not be lost.
        self.starting = True
        signal.signal(signal.SIGINT, self._on_interrupt)
        self.sc.setJobGroup(self.group, "dli-kernel statement", interruptOnCancel=True)
        self.progress.start()
        self.starting = False
        if self.interrupts:
            # Raising here would be swallowed by IPython's event machinery and the cell would run
            # anyway; instead no Spark job of this statement can start, and a Python loop gets the
            # manager's next interrupt.
            self._cancel_jobs()

    def stop(self) -> None:
        # Not joined: a last progress write may still be waiting on the JVM, and the statement's reply
        # must not wait for it. The manager reads progress only for the statement's own job group.
        self.done.set()

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        self.interrupts += 1
        if self.starting:
            return  # start() deals with it once the job group exists
        canceller = threading.Thread(target=self._cancel_jobs, name="dli-cancel", daemon=True)
        canceller.start()
        canceller.join(timeout=10)
        # Scala code runs on a JVM thread that the cancel interrupts and, if need be, stops; the kernel
        # waits for it in py4j, where a KeyboardInterrupt would only break the connection.
        if _inside_py4j(frame) and (self.interrupts == 1 or scala_repl.busy.is_set()):
            return
        raise KeyboardInterrupt

    def _cancel_jobs(self) -> None:
        # "AndFutureJobs": the interrupt may land while the query is still being planned, before its
        # first job exists; the group is this statement's alone, so nothing else is caught by it.
        self.sc._jsc.sc().cancelJobGroupAndFutureJobs(self.group, "statement cancelled")
        if scala_repl.busy.is_set():
            scala_repl.cancel_running()

    def _write_progress(self) -> None:
        tracker = None  # made on first use: a fast statement should cost no JVM call here
        path = Path(PROGRESS_FILE)
        interval = PROGRESS_FIRST
        while not self.done.wait(interval):
            interval = PROGRESS_INTERVAL
            tracker = tracker or self.sc.statusTracker()
            done = total = 0
            for job_id in tracker.getJobIdsForGroup(self.group):
                job = tracker.getJobInfo(job_id)
                for stage_id in job.stageIds if job else ():
                    stage = tracker.getStageInfo(stage_id)
                    if stage:
                        done, total = done + stage.numCompletedTasks, total + stage.numTasks
            scratch = path.with_suffix(f".{self.group}.tmp")  # the last statement's thread may still write
            scratch.write_text(json.dumps({"group": self.group, "done": done, "total": total}))
            scratch.replace(path)


def _inside_py4j(frame: Any) -> bool:
    while frame is not None:
        if f"{os.sep}py4j{os.sep}" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


_watch: _StatementWatch | None = None


def _before_statement(info: Any) -> None:
    global _watch
    request_id = get_ipython().parent_header["header"]["msg_id"]
    _watch = _StatementWatch(_session().sparkContext, job_group(request_id))
    _watch.start()


def _after_statement(result: Any) -> None:
    global _watch
    if _watch is not None:
        _watch.stop()
        _watch = None


# -- Scala statements ---------------------------------------------------------------------------------


def _request_data() -> dict[str, Any]:
    """What the manager sent with this request besides its code (the Scala code, a cursor).

    It travels in the Jupyter message's metadata, so user code is never pasted into Python source.
    """
    return get_ipython().get_parent()["metadata"]["dli"]


SCALA_NEEDS_OWN_DRIVER = (
    "Scala needs a session with a driver of its own: kind `spark`, or a session created with its own "
    "Spark conf; this session shares its driver."
)


def _scala_interpreter() -> scala_repl.ScalaInterpreter:
    # The interpreter would live in the shared JVM, its classes and bindings seen by every session there.
    if _shared:
        raise scala_repl.ScalaUnavailable(SCALA_NEEDS_OWN_DRIVER)
    return scala_repl.interpreter(_spark)


def run_scala() -> scala_repl.ScalaValue | None:
    """Run the Scala code sent with this request; print its text, or raise its error. When the cell ends
    in an expression its echo is the value returned, so the kernel shows it as the execute result."""
    __tracebackhide__ = True  # IPython hides this frame from the user's traceback
    try:
        code = _request_data()["code"]
        scala_repl.busy.set()
        try:
            interpreter = _scala_interpreter()
            if _watch is not None and _watch.interrupts:
                raise KeyboardInterrupt  # cancelled while the interpreter was starting
            answer = interpreter.run(code, _watch.group if _watch else "dli-scala")
        finally:
            scala_repl.busy.clear()
        text, failure = scala_repl.outcome(answer)
        value = scala_repl.value_echo(answer)
    except KeyboardInterrupt:
        # A cancel that lands while this Python code runs, before or after the Scala: the user asked
        # for a cancelled statement, not for this function's frames.
        text, failure, value = "", scala_repl.CANCELLED, None
    except scala_repl.ScalaUnavailable as err:
        text, failure, value = "", scala_repl.ScalaFailure("ScalaUnavailable", str(err), []), None
    if value is not None and text.endswith(value):
        sys.stdout.write(text[: len(text) - len(value)])
        # The result's text lacks the newline that Livy's text, made of the two again, puts back.
        return scala_repl.ScalaValue(value[:-1])
    sys.stdout.write(text)
    if failure:
        raise scala_repl.error_class(failure.ename)(failure)
    return None


def complete_scala() -> list[str]:
    """Completion candidates for the Scala code and cursor sent with this request, as whole tokens."""
    request = _request_data()
    code, cursor = request["code"], request["cursor"]
    scala_repl.busy.set()
    try:
        answer = _scala_interpreter().complete(code, cursor)
    finally:
        scala_repl.busy.clear()
    # The dotted path before the cursor (`spark.read.`), so candidates replace the whole token.
    dotted = re.search(r"(?:\w+\.)*$", code[: answer["cursor"]])
    prefix = dotted.group() if dotted else ""
    return [prefix + name for name in answer["candidates"]]


# -- Livy's own REPL magics, which Livy clients (sparkmagic's examples, Hue, Zeppelin) send ------------

_JSON_TYPES = ((bool, "BOOLEAN_TYPE"), (int, "BIGINT_TYPE"), (float, "DOUBLE_TYPE"), (str, "STRING_TYPE"))


def _user_value(expression: str) -> Any:
    return eval(expression, get_ipython().user_ns)  # it is the user's own code, run by the user


def _table_magic(line: str) -> None:
    """``%table rows``: a list of dicts (or of lists) as Livy's table mimetype."""
    rows = _user_value(line)
    if not isinstance(rows, list | tuple) or not rows:
        raise ValueError("%table needs a non-empty list of dicts or of lists")
    if all(isinstance(row, dict) for row in rows):
        names = list(dict.fromkeys(key for row in rows for key in row))
        data = [[row.get(name) for name in names] for row in rows]
    else:
        data = [list(row) for row in rows]
        names = [str(i) for i in range(max(len(row) for row in data))]
    headers = [
        {"name": name, "type": _livy_type([row[i] for row in data if i < len(row)])}
        for i, name in enumerate(names)
    ]
    display({LIVY_TABLE_MIME: {"headers": headers, "data": to_json_value(data)}}, raw=True)


def _livy_type(values: list[Any]) -> str:
    present = [value for value in values if value is not None]
    for python_type, livy_type in _JSON_TYPES:
        if present and all(isinstance(value, python_type) for value in present):
            return livy_type
    return "STRING_TYPE" if present else "NULL_TYPE"


def _json_magic(line: str) -> None:
    """``%json value``: the value as ``application/json``."""
    display({SQL_RESULT_MIME: to_json_value(_user_value(line))}, raw=True)


def _matplot_magic(line: str) -> None:
    """``%matplot plt``: the current figure as ``image/png``."""
    import io

    figure = _user_value(line or "plt").gcf()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    display({"image/png": base64.b64encode(buffer.getvalue()).decode("ascii")}, raw=True)
    _user_value(line or "plt").close(figure)


def run_sql(query: str, max_rows: int = DEFAULT_MAX_ROWS) -> None:
    """Run one SQL query and display Livy's ``{schema, data}`` result, saying when rows were cut (the rows
    past the page are not counted: that would run the query again)."""
    __tracebackhide__ = True
    frame = _session().sql(query)
    rows = frame.collect() if max_rows < 0 else frame.limit(max_rows + 1).collect()
    total: int | None = len(rows)
    if 0 <= max_rows < len(rows):
        rows, total = rows[:max_rows], None
    result = {
        "schema": json.loads(frame.schema.json()),
        "data": [[to_json_value(value) for value in row] for row in rows],
        **row_count(len(rows), total),
    }
    display({SQL_RESULT_MIME: result}, raw=True)


def to_json_value(value: Any) -> Any:
    """A Spark value as JSON: exact decimals as strings, ISO dates, nested rows as objects."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return format(value, "f")  # plain digits: "0.0000000000", never "0E-10"
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "asDict"):
        return {key: to_json_value(item) for key, item in value.asDict().items()}
    if isinstance(value, dict):
        return {str(key): to_json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(item) for item in value]
    return str(value)
