"""Several worker processes on one machine (`serve --workers N`, WORKERS).

uvicorn's own supervisor (`uvicorn.supervisors.Multiprocess`) binds the socket once, starts
N spawned processes on it, pings them, replaces a dead one and handles signals; we keep all
of that. What it cannot do for us: run our server class (its workers build a stock
`uvicorn.Server`, and the guarded HTTP protocol of app.core.server refuses to run without
`GuardedServer`'s state), and tell each worker which one it is (the metrics of worker i are
served on METRICS_PORT_BASE + i, see app.core.worker_metrics). So each worker here is a
`WorkerProcess` with a fixed index: it sets `WORKER_INDEX` in its own environment, configures
our logging, and runs `GuardedServer`; a worker that dies is replaced under the same index.

The app is loaded in each worker from an import string with `factory=True`
(`app.main:create_app`, which reads the settings from the environment), as uvicorn requires
for workers: an app object cannot cross into a spawned process.

Changing N at run time (SIGTTIN/SIGTTOU) is refused: the metrics ports and the merge are
planned for WORKERS workers. SIGHUP replaces the workers one by one, as uvicorn does.
"""

from __future__ import annotations

import logging
import os
import socket

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.server import Server
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from app.core.logging import configure_logging
from app.core.server import ConnectionLimits, GuardedServer

log = logging.getLogger("app.server")


class WorkerProcess(Process):
    """One worker: uvicorn's process handle (pings, terminate), our server in it."""

    def __init__(
        self,
        config: uvicorn.Config,
        sockets: list[socket.socket],
        *,
        index: int,
        limits: ConnectionLimits,
        log_level: str,
    ) -> None:
        self.index = index
        self.limits = limits
        self.log_level = log_level
        super().__init__(config, sockets)

    @property
    def server(self) -> Server:
        if self._server is None:
            self._server = GuardedServer(self.config, self.limits)
        return self._server

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover
        # Runs in the spawned worker, before the app is loaded (its settings read this).
        os.environ["WORKER_INDEX"] = str(self.index)
        configure_logging(self.log_level.upper())
        super().target(sockets)


class WorkerSupervisor(Multiprocess):
    """uvicorn's supervisor with indexed `WorkerProcess`es (see the module docstring)."""

    def __init__(
        self,
        config: uvicorn.Config,
        sockets: list[socket.socket],
        *,
        limits: ConnectionLimits,
        log_level: str,
    ) -> None:
        super().__init__(config, sockets)
        self._limits = limits
        self._log_level = log_level
        self.startup_failed = False

    def _spawn(self, index: int) -> WorkerProcess:
        worker = WorkerProcess(
            self.config,
            self.sockets,
            index=index,
            limits=self._limits,
            log_level=self._log_level,
        )
        worker.start()
        return worker

    def init_processes(self) -> None:
        self.processes = [self._spawn(index) for index in range(self.processes_num)]

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for position, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung or dead
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                # It never started (the app, a port, the database): a new one would fail
                # the same way. Stop everything and say so.
                log.error("worker %d failed to start; stopping", position)
                self.startup_failed = True
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.warning("worker %d (pid %s) died; starting a new one", position, process.pid)
            self.processes[position] = self._spawn(position)

    def restart_all(self) -> None:
        """SIGHUP: one worker at a time is stopped (gracefully) and replaced under its index;
        the old one goes first because the new one takes over its metrics port. The others
        keep serving meanwhile."""
        for position, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            old.terminate()
            old.join()
            new = self._spawn(position)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                log.error("worker %d was not ready in time after SIGHUP", position)
                return
            self.processes[position] = new

    def handle_ttin(self) -> None:
        log.warning("SIGTTIN ignored: the number of workers is WORKERS (restart to change it)")

    def handle_ttou(self) -> None:
        log.warning("SIGTTOU ignored: the number of workers is WORKERS (restart to change it)")


def run_workers(config: uvicorn.Config, limits: ConnectionLimits, log_level: str) -> int:
    """Bind once, run `config.workers` workers until a signal; uvicorn's exit codes."""
    sock = config.bind_socket()
    supervisor = WorkerSupervisor(config, [sock], limits=limits, log_level=log_level)
    try:
        supervisor.run()
    finally:
        sock.close()
    return STARTUP_FAILURE if supervisor.startup_failed else 0
