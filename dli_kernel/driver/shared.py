"""Shared-driver sessions: many session kernels on the one Spark driver JVM of a "host" kernel.

The host is an ordinary driver kernel (``runtime.bootstrap``) that runs no statements. For each session it
opens a py4j server of its own into the JVM (``open_session``); the session's kernel, an ordinary ipykernel
without a JVM, connects to it and makes its ``spark``/``sc`` there (``attach``, through
``runtime.attach``). What makes a session's part of the JVM its own:

- a job tag, ``shared_job_tag(key)``, that every Spark job it starts carries, so the host can cancel all of
  them at once (the session's end) and the session's ``sc.cancelAllJobs()`` cancels only its own;
- a JVM SparkSession of its own (``newSession()`` of the host's): its own temp views, SQL conf and UDFs;
  the host marks it with the key in its SQL conf, which is how the host finds its cached tables again.

Both travel to the session without any message: the host sets the tag and the session as the active one
on its calling thread while it starts the py4j server, and the JVM threads of that server (one per Python
thread of the session's kernel) inherit both (SparkContext local properties and the active session are
inheritable thread locals). A session cannot lose them by clearing them on one thread: its next thread
gets them again.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from pyspark import SparkConf, SparkContext

from dli_kernel.protocol import shared_job_tag

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The SQL conf entry that names the session a JVM SparkSession belongs to. A cached table's plan keeps
# the session that cached it, or with Spark's default conf a clone of it, which copies its conf.
SESSION_MARK = "spark.dli-kernel.sharedSession"
KEY_PATTERN = re.compile(r"[0-9a-f]{16}\Z")
SESSION_CLASS = "org.apache.spark.sql.classic.SparkSession"
HANDSHAKE_TIMEOUT = 30.0  # seconds a new py4j connection may wait for the JVM to accept it
GATEWAY_ENV = ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET")

_servers: dict[str, Any] = {}  # key -> its org.apache.spark.api.python.Py4JServer
_servers_lock = threading.Lock()


def _checked_key(key: Any) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise ValueError(f"a shared session's key is 16 lowercase hex digits, not {key!r}")
    return key


# -- in the host kernel ---------------------------------------------------------------------------------


def _host() -> SparkSession:
    from dli_kernel.driver import runtime

    return runtime._session()


def open_session(key: str) -> str:
    """Start session ``key``'s py4j server; JSON ``{"port", "secret"}`` for its kernel to connect with."""
    _checked_key(key)
    spark = _host()
    jvm: Any = spark._jvm
    scala_sc = spark.sparkContext._jsc.sc()
    sessions = getattr(jvm, SESSION_CLASS)
    with _servers_lock:
        if key in _servers:
            raise ValueError(f"the shared session {key} is already open; a key is used once")
        own = spark._jsparkSession.newSession()
        own.sessionState().conf().setConfString(SESSION_MARK, key)
        tag = shared_job_tag(key)
        scala_sc.addJobTag(tag)
        sessions.setActiveSession(own)
        try:
            server = jvm.org.apache.spark.api.python.Py4JServer(scala_sc.conf())
            server.start()
        finally:
            # This thread is the host's, and runs the next session's opening.
            scala_sc.removeJobTag(tag)
            sessions.setActiveSession(spark._jsparkSession)
        _servers[key] = server
        _keep_host_default(spark)
    return json.dumps({"port": int(server.getListeningPort()), "secret": str(server.secret())})


def release_session(key: str) -> str:
    """End session ``key`` in the JVM: its jobs cancelled, its cached tables uncached, its py4j server shut
    down (which frees what its kernel held there). JSON ``{"released", "uncached"}``; an unknown key (never
    opened, or released already) is not released again."""
    _checked_key(key)
    with _servers_lock:
        server = _servers.pop(key, None)
    if server is None:
        return json.dumps({"released": False, "uncached": 0})
    spark = _host()
    scala_sc = spark.sparkContext._jsc.sc()
    # The server first: were the jobs cancelled first, the session's waiting call would return and its
    # kernel call again while the server shuts down, a connection py4j may accept and never answer.
    server.shutdown()
    scala_sc.cancelJobsWithTag(shared_job_tag(key), "the session ended")
    uncached = _uncache(spark, key)
    _keep_host_default(spark)
    return json.dumps({"released": True, "uncached": uncached})


def open_sessions() -> int:
    """How many sessions the host has open."""
    with _servers_lock:
        return len(_servers)


def _uncache(spark: SparkSession, key: str) -> int:
    """Uncache the entries session ``key`` cached in the JVM's one cache, and no other session's.

    The cache manager has no public list of its entries: the private field is read by reflection (if a
    Spark version renames it, nothing is uncached and the log says so). An entry another session asked to
    cache too was not cached twice: it is the first asker's, and goes with it (the other's queries stay
    right, they compute again).
    """
    from py4j.protocol import Py4JError

    manager = spark._jsparkSession.sharedState().cacheManager()
    try:
        field = manager.getClass().getDeclaredField("cachedData")
        field.setAccessible(True)
        entries = field.get(manager)
        mine = []
        for index in range(int(entries.size())):
            entry = entries.apply(index)
            owner = entry.cachedRepresentation().cacheBuilder().cachedPlan().session()
            if owner is not None and owner.conf().get(SESSION_MARK, "") == key:
                mine.append((owner, entry.plan()))
        for owner, plan in mine:
            manager.uncacheQuery(owner, plan, False, False)  # not cascading: what others built on it stays
    except Py4JError as err:
        _log("WARN", f"the shared session's cached tables were not uncached: {str(err).splitlines()[0]}")
        return 0
    return len(mine)


def _keep_host_default(spark: SparkSession) -> None:
    """Make the host's session the JVM's default one again, should an attaching session have left its own
    there (see ``attach``); a released session's would otherwise stay in memory."""
    getattr(spark._jvm, SESSION_CLASS).setDefaultSession(spark._jsparkSession)


# -- in a session's kernel ----------------------------------------------------------------------------


def attach(settings_json: str) -> SparkSession:
    """Connect to the host's JVM with ``{"gateway": {"port", "secret"}, "key"}``; the session's SparkSession,
    its stop and cancelAllJobs kept to this session."""
    from pyspark.java_gateway import launch_gateway
    from pyspark.sql import SparkSession

    settings = json.loads(settings_json)
    key = _checked_key(settings.get("key"))
    port, secret = int(settings["gateway"]["port"]), str(settings["gateway"]["secret"])
    del settings  # the secret goes nowhere but py4j's client
    # PySpark's own connection code, which reads these; they go again at once, or the user's subprocesses
    # would inherit the secret.
    os.environ.update(zip(GATEWAY_ENV, (str(port), secret), strict=True))
    try:
        gateway = launch_gateway()
    finally:
        for name in GATEWAY_ENV:
            os.environ.pop(name, None)
    del secret
    _bound_handshakes(gateway)
    jvm: Any = gateway.jvm
    sessions = getattr(jvm, SESSION_CLASS)
    active = sessions.getActiveSession()  # inherited from the host's thread that opened this session
    own = active.get() if active.isDefined() else None
    if own is None or own.conf().get(SESSION_MARK, "") != key:
        gateway.shutdown()
        raise RuntimeError(f"the shared driver has not opened session {key} on this connection")
    scala_sc = own.sparkContext()
    sc = _SharedContext(
        shared_job_tag(key),
        gateway=gateway,
        jsc=jvm.org.apache.spark.api.java.JavaSparkContext.fromSparkContext(scala_sc),
        conf=SparkConf(_jconf=scala_sc.getConf()),
    )
    host_default = sessions.getDefaultSession()
    # PySpark makes the first Python SparkSession of a process the JVM's default session, a JVM global:
    # it goes back to the host's (which the host also restores whenever it opens or releases a session).
    spark = SparkSession(sc, own)
    if host_default.isDefined() and sessions.getDefaultSession().get().equals(own):
        sessions.setDefaultSession(host_default.get())
    # Not a subclass: the user sees this object, and its repr names its class.
    spark.stop = _not_stopping  # type: ignore[method-assign]
    return spark


def _bound_handshakes(gateway: Any) -> None:
    """Give up on a py4j connection whose handshake gets no answer.

    py4j connects a Python thread's first call (and a call again whose connection broke) with a handshake
    it waits for without end. A py4j server shutting down (the session's release) can accept such a
    connection and never answer it: the kernel would hang in its next Spark call instead of failing.
    Only the handshake is bounded; a call itself waits as long as its job runs.
    """
    client = gateway._gateway_client
    if not hasattr(client, "_create_new_connection"):  # py4j's other (unpinned) client has no such call
        return
    create = client._create_new_connection
    client.java_parameters.read_timeout = HANDSHAKE_TIMEOUT  # what py4j sets on a new connection's socket

    def create_new_connection() -> Any:
        connection = create()
        connection.socket.settimeout(None)
        return connection

    client._create_new_connection = create_new_connection


class _SharedContext(SparkContext):
    """A SparkContext on the shared JVM: stopping it would stop every sharing session's Spark (PySpark
    stops a context whose construction failed, too), and cancelling all jobs cancels this session's."""

    def __init__(self, tag: str, **arguments: Any) -> None:
        self._session_tag = tag
        super().__init__(**arguments)

    def stop(self) -> None:
        _not_stopping()

    def cancelAllJobs(self) -> None:
        self.cancelJobsWithTag(self._session_tag)


def _not_stopping() -> None:
    _log(
        "WARN",
        "stop() leaves Spark running: this session's Spark driver is shared with other sessions, "
        "and the session ends when it is deleted",
    )


def _log(level: str, message: str) -> None:
    stamp = time.strftime("%y/%m/%d %H:%M:%S")
    log = sys.__stderr__  # the driver's own stderr, which the server writes to the session log
    if log is not None:
        log.write(f"{stamp} {level} dli-kernel: {message}\n")
        log.flush()
