"""Wire constants: what the kernel side, the server and the drivers must agree on, each defined once.

Imported by every process (kernel, server, driver); imports nothing, so importing it costs nothing.
"""

from __future__ import annotations

# Session states: DLI's Table 4 plus DLC's `killed` and Livy's `recovering`.
LIVE_STATES = ("not_started", "starting", "recovering", "idle", "busy", "shutting_down")
ENDED_STATES = ("error", "dead", "killed", "success")
SESSION_STATES = LIVE_STATES + ENDED_STATES
READY_STATES = ("idle", "busy", "running")  # `running` is what some Livy versions say for busy

# Statement states (Livy).
STATEMENT_STATES = ("waiting", "running", "available", "error", "cancelling", "cancelled")
STATEMENT_DONE = ("available", "error", "cancelled")

# Other spellings servers use for the same states.
STATE_SPELLINGS = {"canceled": "cancelled", "canceling": "cancelling", "shutting down": "shutting_down"}

KINDS = ("pyspark", "spark", "sql")
KIND_ALIASES = {"python": "pyspark", "scala": "spark"}
RESULT_FORMATS = ("json", "arrow")

# Rows a SQL result carries unless the statement says otherwise (`maxRows`, -1 for all).
DEFAULT_MAX_ROWS = 1000

# Output MIME types.
LIVY_TABLE_MIME = "application/vnd.livy.table.v1+json"  # Livy's %table magic
SQL_RESULT_MIME = "application/json"  # Livy's SQL result: {"schema", "data"}
ARROW_STREAM_MIME = "application/vnd.apache.arrow.stream"
ARROW_RESULT_MIME = "application/vnd.dli-kernel.arrow-result+json"  # the server's summary of an Arrow result
TIMEZONE_KEY = b"dli_kernel.timezone"  # Arrow schema metadata: Spark's session time zone

# Extensions to Livy the embedded server lists in `GET /version`; plain Livy clients never use them.
EXT_WAIT = "wait"  # `?wait=<seconds>` long-poll on session and statement GETs
EXT_ARROW = "arrow"  # `"resultFormat": "arrow"` and `GET .../statements/{id}/result`
# Added to EXTENSIONS by the work that serves them (issue 14):
EXT_OUTPUTS = "outputs"  # a statement's output also carries its Jupyter outputs in order (`jupyterOutputs`)
JUPYTER_OUTPUTS = "jupyterOutputs"  # that field of a Python or Scala statement's output
EXT_LINKS = "links"  # `POST /sessions/{id}/links`: short-lived signed browser links (Spark UI, driver log)
LINK_PARAM = "link"  # the query parameter a signed browser link carries its signature in
LINK_COOKIE = "dli_link"  # the cookie an opened link leaves, scoped to the one path it opens
EXTENSIONS = (EXT_WAIT, EXT_ARROW, EXT_OUTPUTS, EXT_LINKS)
MAX_WAIT = 30.0  # seconds a long-poll may hold a request: well inside any client's read timeout

# Files in the server's state dir.
SERVER_FILE = "server.json"  # url, token, pid of the running server (mode 0600)
SERVER_LOG = "server.log"
SESSIONS_DB = "sessions.db"
SERVER_TOKEN_ENV = "DLI_KERNEL_SERVER_TOKEN"
# Every variable of this project starts so. They are for its kernels and server, never for a driver, which
# runs users' code and is started without them: some are secrets (the server's token, a kernel's token).
ENV_PREFIX = "DLI_KERNEL_"

# Files in a session's workdir (the driver's working directory), written by the driver, read by the server.
DRIVER_LOG = "driver.log"
FORK_SERVER_MODULE = "dli_kernel.driver.fork_server"  # run as `python -m ... STATE_DIR`: forks driver kernels
# A driver kernel's options after `python -m ipykernel_launcher -f CONNECTION_FILE`, however it is started:
DRIVER_KERNEL_OPTIONS = (
    # no parent to watch (a server restart must not end the driver), which also keeps the console banner
    # meant for humans out of the session log;
    "--IPKernelApp.parent_handle=1",
    "--IPKernelApp.log_level=ERROR",
    # the JVM shares the kernel's stdout/stderr: its log lines (and ours, written to sys.__stderr__) belong
    # in the session log, not in the text of whatever statement is running when they are written;
    "--IPKernelApp.capture_fd_output=False",
    # no input history: Livy keeps none, and every driver writing the one history database of the user's
    # IPython profile made a statement wait seconds for its lock.
    "--HistoryManager.enabled=False",
)
PROGRESS_FILE = "progress.json"
RESULTS_DIR = "results"  # Arrow results, `<statement id>.arrow`
KEEP_RESULTS = 2  # per session: the newest, and the one before it for a client still reading it


# -- Tencent Cloud DLC: what the dlc client dialect and the server's DLC action API must agree on ---------
DLC_PATH = "/"  # every action is a POST here
DLC_API_VERSION = "2021-01-25"  # X-TC-Version
DLC_SIGN_ALGORITHM = "TC3-HMAC-SHA256"
DLC_SERVICE = "dlc"  # the service in a TC3 credential scope
DLC_UTC_OFFSET_HOURS = 8  # Tencent Cloud's times without a zone are Beijing's
DLC_MAX_RESULTS = 1000  # most rows one DescribeNotebookSessionStatementSqlResult page holds
DLC_REFUSED_KINDS = ("sparkr",)  # DLC has it; nothing here runs R
# DLC's sizes, smallest first, in CUs; a size is the driver's or each executor's cores and memory.
DLC_SIZES = {"small": 1, "medium": 2, "large": 4, "xlarge": 8}
DLC_CU_CORES = 1
DLC_CU_MEMORY_MB = 4096


def job_group(msg_id: str) -> str:
    """The Spark job group of the statement sent as execute request ``msg_id``: the server knows the
    request's id, the driver tags the statement's jobs with it, so progress and cancel find them."""
    return f"dli-{msg_id}"


def shared_job_tag(key: str) -> str:
    """The Spark job tag every job of shared-driver session ``key`` carries: the host cancels them all with
    it when the session ends, and the session's ``sc.cancelAllJobs()`` cancels only those."""
    return f"dli-session-{key}"


def result_path(statement_id: int) -> str:
    """Where statement ``statement_id``'s Arrow stream goes, relative to the session's workdir."""
    return f"{RESULTS_DIR}/{int(statement_id)}.arrow"


# -- A server a team shares: its users, their DLC keys, and the kernel's trust in its certificate ---------
USERS_FILE = "users.json"  # the `dli-kernel users` commands' default, in the state dir (mode 0600)
DLC_SECRET_FILE = "dlc-secret"  # in the state dir: what users' DLC SecretKeys are derived from (mode 0600)
LINK_SECRET_FILE = "link-secret"  # in the state dir: the key browser links are signed with (mode 0600)
CA_BUNDLE_ENV = "DLI_KERNEL_CA_BUNDLE"  # the CA file (or directory) the kernel verifies the server with

# -- How much of a session's log a cell shows while its statement runs (kernel/spark_log.py) --------------
LOG_LEVELS = ("quiet", "warn", "info", "all")  # nothing; warnings, errors and prints; INFO too; every line
DEFAULT_LOG_LEVEL = "warn"
LOG_LEVEL_ENV = "DLI_KERNEL_LOG_LEVEL"
