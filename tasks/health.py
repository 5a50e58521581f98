"""Whether the servers the environment names answer, checked before any work starts."""

from __future__ import annotations

import time
import urllib.error
import urllib.request


class ServiceUnreachable(ConnectionError):
    """A server named in the environment does not answer; the message says what to fix."""


def check_reachable(
    url: str, what: str, variable: str, hint: str, timeout: float = 3.0, attempts: int = 2
) -> None:
    """GET ``<url>/health`` and raise :class:`ServiceUnreachable` unless a server answers.

    Any HTTP answer counts (even 401 or 404: something is listening), except 502, 503 and
    504, which a proxy gives for a server behind it that is down. Each attempt waits at
    most ``timeout`` seconds, so a dead address fails in seconds instead of after the
    minutes of retries the MLflow and Prefect clients would spend on it.
    """
    problem = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(0.5)
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout):
                return
        except urllib.error.HTTPError as err:
            if err.code not in (502, 503, 504):
                return
            problem = f"it answered HTTP {err.code} {err.reason}"
        except (OSError, ValueError) as err:  # refused, timed out, unknown host, bad URL
            reason = getattr(err, "reason", err)
            problem = str(reason) or type(reason).__name__
    raise ServiceUnreachable(f"Cannot reach the {what} at {url} ({variable}): {problem}. {hint}")


def check_tracking_server(uri: str) -> None:
    """Fail fast if the MLflow tracking URI names an http(s) server that does not answer."""
    if not uri.startswith(("http://", "https://")):
        return  # a local store (sqlite, file) or a scheme MLflow resolves itself
    check_reachable(
        uri,
        "MLflow tracking server",
        "MLFLOW_TRACKING_URI",
        "Start the server, or fix MLFLOW_TRACKING_URI; unset, runs are recorded in "
        "<workdir>/mlflow.db.",
    )
