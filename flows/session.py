"""What one ``ooc`` command runs on: a Prefect API and a Dask cluster, started together,
stopped in order, and never outliving the command.

Without ``PREFECT_API_URL``, a temporary API is started for the command (its records stay
in Prefect's local database, which ``prefect server start`` shows afterwards). Without a
cluster address or class, a ``LocalCluster`` is started at the same time, its workers
already importing what the tasks need, and the flows connect to it. On the way out the
cluster is closed first (its workers send their last logs to the API), then the API.

SIGTERM is handled like Ctrl-C: the run stops, its MLflow run ends FAILED, outputs are
never partial (they are written atomically). After SIGKILL, the API server is ended by the
kernel (see :mod:`flows.api`) and the Dask worker processes by their own parent check.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from .api import TemporaryAPI, first_use

# `prefect server start` serves the local database, where temporary APIs record runs.
LOCAL_UI = "http://127.0.0.1:4200"
# Modules worker processes import as they start, so the first task does not wait for them
# (threads of this process share its imports).
WORKER_PRELOAD = [f"ooc.tasks.{name}" for name in ("training", "prediction", "data", "evaluation")]


@dataclass
class Session:
    """Where this command's flows report and run."""

    api_url: str
    temporary_api: bool
    cluster: object | None  # the LocalCluster this command started, if it did

    @property
    def dask_address(self) -> str | None:
        return self.cluster.scheduler_address if self.cluster is not None else None


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _local_cluster(settings):
    from distributed import LocalCluster

    from ooc.tasks.settings import local_cluster_kwargs

    kwargs = local_cluster_kwargs(settings)
    if kwargs["processes"]:
        kwargs["preload"] = WORKER_PRELOAD
    return LocalCluster(**kwargs)


def _quiet_loggers() -> None:
    """The task runner says it connects to the cluster this command started: noise here.
    An error about the input shows as its message, without a traceback."""
    import logging

    from .terminal import plain_input_errors

    logging.getLogger("prefect.task_runner.dask").setLevel(logging.WARNING)
    plain_input_errors()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _dashboard_link(cluster, address: str) -> str | None:
    """The dashboard's link on the host it was bound to: an in-process cluster names the
    machine's address in ``dashboard_link``, where a loopback-only dashboard is not."""
    link = cluster.dashboard_link
    host = address.rpartition(":")[0]
    if not link or host in ("", "0.0.0.0", "::"):
        return link
    parts = urlsplit(link)
    return parts._replace(netloc=f"{host}:{parts.port}").geturl()


@contextmanager
def command_session(
    settings, *, check=None, meanwhile=None, then=None, needs_cluster=True,
    first_use_timeout=300.0,
):  # fmt: skip
    """Start the API (unless ``PREFECT_API_URL`` is set) and a LocalCluster (unless the
    settings name a cluster), both at once; yield a :class:`Session`; stop them in order.

    ``check()`` runs as soon as the API process is started (an error there stops it and
    nothing else starts); ``meanwhile()`` runs in a thread while the cluster starts (e.g.
    importing the flows), so the command's start costs the slowest of them, not the sum;
    ``then()`` runs after both, while the API finishes its own start in its process (e.g.
    opening the tracking store).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    api = None
    if not os.environ.get("PREFECT_API_URL"):
        fresh = first_use()
        api = TemporaryAPI()
        api.start()
        # Before prefect is imported, so its settings, and every worker, see it.
        os.environ["PREFECT_API_URL"] = api.url
        # Links to runs point at the UI that shows them once this API is gone.
        os.environ.setdefault("PREFECT_UI_URL", LOCAL_UI)
        if fresh:
            _say(
                "First use: Prefect is creating its database in "
                f"{os.environ.get('PREFECT_HOME', '~/.prefect')} (once; up to a minute)."
            )
    cluster = None
    try:
        if check is not None:
            check()
        side = threading.Thread(target=meanwhile, name="ooc-preparing") if meanwhile else None
        if side is not None:
            side.start()
        local = needs_cluster and not (settings.dask_address or settings.dask_cluster_class)
        if local:
            cluster = _local_cluster(settings)
            os.environ["OOC_DASK_ADDRESS"] = cluster.scheduler_address
            link = _dashboard_link(cluster, settings.dashboard_address)
            if link:
                _say(f"Dask dashboard, while the command runs: {link}")
        if side is not None:
            side.join()
        if then is not None:
            then()
        if api is not None:
            api.wait_ready(first_use_timeout if fresh else 60.0)
        _quiet_loggers()
        yield Session(os.environ["PREFECT_API_URL"], api is not None, cluster)
    finally:
        try:
            _drain_prefect()
        finally:
            if cluster is not None:
                os.environ.pop("OOC_DASK_ADDRESS", None)
                _close_cluster(cluster)
            if api is not None:
                os.environ.pop("PREFECT_API_URL", None)
                if os.environ.get("PREFECT_UI_URL") == LOCAL_UI:
                    os.environ.pop("PREFECT_UI_URL")
                api.stop()


def _close_cluster(cluster) -> None:
    """Close the workers first, giving them time to exit on their own."""
    try:
        cluster.close(timeout=20)
    except Exception:  # noqa: BLE001 - closing must not hide the command's own error
        pass


def _drain_prefect() -> None:
    """Send queued logs and events before the API stops (else they retry for a minute)."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    start = time.monotonic()
    APILogHandler().flush()
    EventsWorker.drain_all(timeout=max(1.0, 10 - (time.monotonic() - start)))
