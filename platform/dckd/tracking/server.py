"""The tracking server seen from a run: is it there, how long one request may take, which failures pass.

MLflow's own HTTP client retries a refused request 7 times with exponential backoff (about 250 s)
and waits up to 120 s for each answer (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``: read at each request).
dckd checks the server once before a run starts (:func:`check_server`, a few seconds at most) and
buffers what it logs (:mod:`dckd.tracking.sender`), retrying on its own terms; so its requests run
under :func:`mlflow_limits`: one immediate retry, unless those variables are set.

Every message that names the tracking URI goes through :func:`dckd.tracking.redaction.redact`: a
password in ``http://user:PASSWORD@host`` never reaches stdout, a log or an exception.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from dckd.errors import TrackingError
from dckd.tracking.redaction import redact, scrub

CHECK_TIMEOUT_S = 5.0
"""The whole reachability check (name lookup, connect, answer) before a run starts."""
PROBE_TIMEOUT_S = 2.0
"""One probe while the server is known to be down."""

MLFLOW_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    # urllib3 draws the jitter from Python's global `random`: the training's stream (never touched).
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    # MLFLOW_HTTP_REQUEST_TIMEOUT keeps its 120 s: a large checkpoint proxied to S3 may take that long
    # to be acknowledged, and a server that hangs is noticed by the health probes, not by this.
    # MLflow prints "View run ... at: URL" with the URL's password: dckd prints its own, masked line.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}

_limits_lock = threading.Lock()
_limits_depth = 0
_limits_set: list[str] = []


def is_remote(uri: str | None) -> bool:
    """An http(s) tracking server: it can be down, so a run checks it first and buffers what it logs."""
    return bool(uri) and str(uri).lower().startswith(("http://", "https://"))


def user_env(name: str) -> str | None:
    """The value of an MLflow variable as the user set it (None where only :func:`mlflow_limits` set it)."""
    with _limits_lock:
        return None if name in _limits_set else os.environ.get(name)


@contextlib.contextmanager
def mlflow_limits() -> Iterator[None]:
    """MLflow requests made inside fail fast (:data:`MLFLOW_LIMITS`); variables the user set are kept.

    The variables are process-wide: they are set while at least one dckd tracking call runs and
    removed after the last one ends.
    """
    global _limits_depth
    with _limits_lock:
        if _limits_depth == 0:
            _limits_set.clear()
            for name, value in MLFLOW_LIMITS.items():
                if name not in os.environ:
                    os.environ[name] = value
                    _limits_set.append(name)
        _limits_depth += 1
    try:
        yield
    finally:
        with _limits_lock:
            _limits_depth -= 1
            if _limits_depth == 0:
                for name in _limits_set:
                    os.environ.pop(name, None)
                _limits_set.clear()


# --------------------------------------------------------------------------- reachability
def _tls() -> dict[str, Any]:
    """The TLS settings MLflow's own client reads from the environment."""
    kw: dict[str, Any] = {}
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        kw["verify"] = False
    elif os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        kw["verify"] = os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    if os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
        kw["cert"] = os.environ["MLFLOW_TRACKING_CLIENT_CERT_PATH"]
    return kw


def _connection_reason(exc: BaseException) -> str:
    text = str(exc).lower()
    for needle, reason in (("refused", "connection refused"), ("name or service not known", "host name not found"),
                           ("nodename nor servname", "host name not found"),
                           ("temporary failure in name resolution", "host name not found"),
                           ("no route to host", "no route to host"), ("network is unreachable", "network unreachable"),
                           ("timed out", "connection timed out"), ("reset by peer", "connection reset")):
        if needle in text:
            return reason
    return "cannot connect"


def _probe_once(uri: str, timeout: float) -> str | None:
    import requests

    try:
        resp = requests.get(uri.rstrip("/") + "/health", timeout=timeout, **_tls())
    except requests.exceptions.SSLError:
        return "TLS handshake failed"
    except requests.exceptions.Timeout:
        return f"no answer within {timeout:g} s"
    except requests.exceptions.ConnectionError as exc:
        return _connection_reason(exc)
    except (requests.exceptions.RequestException, OSError, ValueError) as exc:
        return type(exc).__name__
    # Any answer but a server error means something listens there (auth and paths are MLflow's business).
    return f"HTTP {resp.status_code} from /health" if resp.status_code >= 500 else None


def probe(uri: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the server at ``uri`` answers, else why not in a few words; never takes much over ``timeout``.

    The request runs in a daemon thread, so a name lookup that hangs (not covered by socket
    timeouts) cannot hold the caller. It touches no random number generator.
    """
    box: list[str | None] = []
    worker = threading.Thread(target=lambda: box.append(_probe_once(uri, timeout)), daemon=True,
                              name="dckd-tracking-probe")
    worker.start()
    worker.join(timeout + 0.5)
    return box[0] if box else f"no answer within {timeout:g} s"


def check_server(uri: str | None, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Raise :class:`TrackingError` naming ``uri`` (credentials masked) unless its server answers.

    Only http(s) URIs are checked: a sqlite or file store needs no server.
    """
    if not is_remote(uri):
        return
    assert uri is not None
    reason = probe(uri, timeout)
    if reason is not None:
        raise TrackingError(
            f"MLflow tracking server {scrub(uri)} does not answer ({reason}): start it, or give another "
            "tracking URI (--tracking-uri, tracking.tracking_uri or $MLFLOW_TRACKING_URI), or train without "
            "tracking (--set tracking.enabled=false)")


# --------------------------------------------------------------------------- failures and messages
def _status(exc: BaseException) -> int | None:
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return int(exc.get_http_status_code())
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return int(code) if isinstance(code, int) else None


def _network_failure(exc: BaseException) -> bool:
    """No answer at all: a connection error or a timeout, possibly wrapped by MLflow."""
    import requests

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                          TimeoutError)):
            return True
        todo += [e.__cause__, e.__context__]
    return False


def is_transient(exc: BaseException) -> bool:
    """A failure that retrying later can cure: no answer (connection refused, reset, timed out), or an
    answer saying so (5xx, 429).

    A refusal (4xx: the run is gone, a param changed value, credentials refused) or a local problem
    (a missing file, an error MLflow raised without asking the server) is not transient.
    """
    import requests
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return False
    if _network_failure(exc):
        return True
    status = _status(exc)
    if isinstance(exc, (RestException, requests.exceptions.HTTPError)):
        return status is None or status >= 500 or status == 429
    if isinstance(exc, MlflowException):
        # The server's answer without a JSON body keeps its status; INTERNAL_ERROR (500) is also what
        # MLflow raises for its own, local errors: only a 500 the server sent counts.
        if status is not None and status != 500:
            return status > 500 or status == 429
        return "failed with error code 5" in str(exc.message)
    return isinstance(exc, (requests.exceptions.RequestException, OSError))


def describe(exc: BaseException, limit: int = 300) -> str:
    """One line about ``exc`` for a log or an error: credentials masked, long server answers cut."""
    from mlflow.exceptions import MlflowException

    text = exc.message if isinstance(exc, MlflowException) else str(exc)
    line = " ".join(redact(str(text) or type(exc).__name__).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def view_run_lines(uri: str, experiment_id: str, run_id: str, run_name: str) -> list[str]:
    """What MLflow prints when a run ends on a server, with the URL's credentials masked."""
    base = scrub(uri).rstrip("/")
    experiment = f"{base}/#/experiments/{experiment_id}"
    return [f"View run {scrub(run_name)} at: {experiment}/runs/{run_id}", f"View experiment at: {experiment}"]
