"""Run the embedded SQS server for development: `python -m queue_manager.local_sqs --port P [--state-dir D] MINISTACK`.

supervisord runs it (`[program:sqs]`). It refuses a taken port in one line, so the API and the
workers never start against whatever else answers there, says once that the server is for
development, then becomes ministack on loopback, its queues saved in the state folder on a clean stop.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

# The port is checked before anything heavier is imported (settings, logging): supervisord counts
# this program as started after `startsecs`, and a refusal must come well inside them.

logger = logging.getLogger("queue_manager.local_sqs")  # not __name__: run as __main__

#: The exit status that tells supervisord (and its `events` listener) this cannot start.
CANNOT_START = 2

#: The variable supervisord.conf reads the port from.
PORT_VARIABLE = "QM_LOCAL_SQS_PORT"

HOST = "127.0.0.1"

#: The AWS services the embedded server offers (ministack's `SERVICES`).
SERVICES = "sqs,s3,dynamodb"

#: How long the server lets requests in flight finish once told to stop (hypercorn's default: 3 s).
#: When `make run` stops it, the API and the workers have already exited: what is left in flight is
#: the workers' idle long polls, up to 20 s, with nobody to answer. Waiting 3 s for them was three
#: quarters of this server's stop. Its queues are saved after this wait, as before.
GRACEFUL_STOP_SECONDS = 0.5

#: This file, which the bootstrap loads by path in ministack's interpreter (no queue_manager there).
WAKE_MODULE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "local_sqs_wake.py")

#: Runs ministack as its console script does, with hypercorn's stop wait above (ministack builds
#: hypercorn's Config itself and offers no setting for it), and with long polls that answer as soon
#: as a message is sent (`queue_manager/local_sqs_wake.py`, loaded by path). Arguments: the wait,
#: the wake module's path, then the console script (which becomes argv[0], as when the script runs,
#: and names the server in `ps`).
BOOTSTRAP = (
    "import importlib.util, sys\n"
    "import hypercorn.config\n"
    "hypercorn.config.Config.graceful_timeout = float(sys.argv[1])\n"
    "spec = importlib.util.spec_from_file_location('local_sqs_wake', sys.argv[2])\n"
    "wake = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(wake)\n"
    "wake.install()\n"
    "sys.argv[:] = sys.argv[3:]\n"
    "from ministack.app import main\n"
    "sys.exit(main())\n"
)


def port_taken(host: str, port: int) -> bool:
    """Whether something listens on `host:port` (a connection in TIME_WAIT does not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m queue_manager.local_sqs")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", help="where queues and tables are saved on a clean stop (none: not saved)")
    parser.add_argument("--services", default=SERVICES, help=f"ministack's SERVICES (default {SERVICES})")
    parser.add_argument("ministack")
    args = parser.parse_args(argv)
    if port_taken(HOST, args.port):
        print(
            f"local SQS: cannot start: port {args.port} on {HOST} is in use; "
            f"set {PORT_VARIABLE} to a free port (or stop what holds it).",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(CANNOT_START)
    from queue_manager import logs
    from queue_manager.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
        logs.configure(settings.log_format, level=settings.log_level)
    except SettingsError:  # the API and the workers report it; this server does not need them
        logs.configure("auto")
    saved = (
        f"saves its queues and tables in {args.state_dir} on a clean stop, "
        "and a crash of it loses every change since it started"
        if args.state_dir
        else "keeps its queues and tables in memory only"
    )
    logger.info(
        "The local SQS server (%s) at http://%s:%d is for development only: it %s.",
        args.services,
        HOST,
        args.port,
        saved,
    )
    sys.stderr.flush()
    env = {
        **os.environ,
        "GATEWAY_PORT": str(args.port),
        "BIND_HOST": HOST,
        # SQS for the queues; S3 and DynamoDB for the features that need them (large payloads,
        # the state store).
        "SERVICES": args.services,
        "LOG_LEVEL": "WARNING",
        "PERSIST_STATE": "0",
    }
    if args.state_dir:  # S3 objects live on disk under the state folder
        env.update(PERSIST_STATE="1", STATE_DIR=args.state_dir, S3_PERSIST="1")
        env["S3_DATA_DIR"] = os.path.join(args.state_dir, "s3")
    python = script_interpreter(args.ministack)
    if python is None:  # not a Python console script: run it as it is, with hypercorn's own wait
        os.execve(args.ministack, [args.ministack], env)
    os.execve(python, [python, "-c", BOOTSTRAP, str(GRACEFUL_STOP_SECONDS), WAKE_MODULE, args.ministack], env)


def script_interpreter(script: str) -> str | None:
    """The interpreter a `#!` script names (ministack's console script names its venv's Python)."""
    try:
        with open(script, "rb") as file:
            first = file.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    return words[0] if words and os.path.basename(words[0]).startswith("python") else None


if __name__ == "__main__":
    main(sys.argv[1:])
