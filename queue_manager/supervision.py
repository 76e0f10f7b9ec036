"""supervisord's event listener for `make run` (`[eventlistener:events]` in supervisord.conf).

- Starts the local SQS server, then the API and the workers once it runs, so a taken SQS port
  (which that server refuses) never sends them to another server listening there.
- Stops everything when a program cannot start: it exits with status 2 (its one-line reason
  printed), or exits within its `startsecs` (`startretries=0`: a failure that quick is a setting or
  a port, not bad luck). A half-working stack does not stay up, nor restarts a program forever.
- Reports starts, stops and unexpected exits in queue-manager's log format, in place of
  supervisord's own lines (`silent=true`).

It speaks supervisord's event protocol on stdin/stdout and logs to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import xmlrpc.client
from typing import Any

from supervisor import childutils

from queue_manager import logs
from queue_manager.settings import Settings, SettingsError

logger = logging.getLogger("queue_manager.supervision")  # not __name__: run as __main__

#: The program that must run before the others start (this listener starts it, being ready for
#: its events by then).
SERVER = "sqs"

#: The programs started once the server runs.
DEPENDENTS = ("api", "worker")


class Supervision:
    """Acts on one PROCESS_STATE event at a time through supervisord's XML-RPC interface."""

    def __init__(self, rpc: Any, *, own_name: str) -> None:
        self.rpc = rpc
        self.own_name = own_name
        self.stopping = False

    def handle(self, event: str, data: dict[str, str]) -> None:
        """React to a PROCESS_STATE_* event about the program `data["processname"]`."""
        name = data.get("processname", "")
        if name == self.own_name:
            return
        if event == "PROCESS_STATE_RUNNING":
            logger.info("Started %s (pid %s).", name, data.get("pid"))
            if name == SERVER and not self.stopping:
                for dependent in DEPENDENTS:
                    self._start(dependent)
        elif event == "PROCESS_STATE_EXITED":
            if data.get("expected") == "1":  # exit status 2, the only one in the programs' exitcodes
                self._stop_all(f"{name} cannot start (exit status 2, its reason is above); stopping everything.")
            else:
                status = self._exit_status(name)
                logger.warning("%s exited unexpectedly (exit status %s); supervisord restarts it.", name, status)
        elif event == "PROCESS_STATE_FATAL":  # it exited within startsecs, and startretries=0
            self._stop_all(f"{name} exited as it started (its reason is above); stopping everything.")
        elif event == "PROCESS_STATE_STOPPED" and data.get("from_state") == "STOPPING":
            logger.info("Stopped %s.", name)  # no exit status: supervisord answers no queries while it shuts down

    def start(self) -> None:
        """Start the server; the rest follows once it runs."""
        self._start(SERVER)

    def _start(self, name: str) -> None:
        try:
            self.rpc.supervisor.startProcess(name, False)
        except xmlrpc.client.Fault as fault:  # already started (a restart of the server), or shutting down
            logger.debug("Did not start %s: %s.", name, fault.faultString)

    def _exit_status(self, name: str) -> int | None:
        try:
            return int(self.rpc.supervisor.getProcessInfo(name)["exitstatus"])
        except (xmlrpc.client.Fault, OSError):
            return None

    def _stop_all(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        logger.error("%s", reason)
        try:
            self.rpc.supervisor.shutdown()
        except (xmlrpc.client.Fault, OSError):
            logger.exception("Could not ask supervisord to stop.")


def main() -> None:
    try:
        settings = Settings.from_env()
        logs.configure(settings.log_format, level=settings.log_level)
    except SettingsError:  # the API and the workers name the bad setting themselves
        logs.configure("auto")
    supervision = Supervision(
        childutils.getRPCInterface(os.environ), own_name=os.environ.get("SUPERVISOR_PROCESS_NAME", "events")
    )
    supervision.start()
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        try:
            supervision.handle(headers["eventname"], childutils.get_headers(payload.split("\n", 1)[0]))
        except Exception:  # one event's failure must not take the listener down
            logger.exception("Failed to handle %s.", headers.get("eventname"))
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
