"""The `qm` command: send messages (validated locally first), list schemas, and tend dead letters."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from queue_manager.client.api import ApiError, QMClient, Unavailable, ValidationFailed

#: Exit codes, also shown by --help.
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3

DEFAULT_URL = "http://127.0.0.1:8000"

EPILOG = f"""\
environment:
  QM_URL       the API's base URL (default {DEFAULT_URL})
  QM_API_KEY   the API key, sent as `Authorization: Bearer <key>`

exit codes:
  {EXIT_OK}  done (for send-batch: every message was accepted)
  {EXIT_REFUSED}  the API answered an error other than 503/429 (e.g. 404, 422), refused some messages of a batch,
     or a redrive did not move every id asked for (not found or failed: listed in its answer)
  {EXIT_INVALID}  bad usage or input, or a message broke its envelope's or its payload's rules: the violations
     are printed, nothing is sent
  {EXIT_UNAVAILABLE}  the API could not be reached, or kept answering 503/429 until the retries ran out
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qm",
        description="Send messages to queue-manager, validated locally first, and tend its dead-letter queues.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default=os.environ.get("QM_URL", DEFAULT_URL), help="the API's base URL")
    parser.add_argument("--api-key", default=os.environ.get("QM_API_KEY"), help="the API key")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds one request may take (default 30)")
    parser.add_argument(
        "--attempts", type=int, default=5, metavar="N", help="attempts of a request answered 503/429 (default 5)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    send = commands.add_parser(
        "send",
        help="validate and send one message",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    send.add_argument("type", metavar="TYPE", help="the message type")
    send.add_argument("payload", metavar="PAYLOAD.json", help="a file holding the payload as JSON; - reads stdin")
    send.add_argument("--delay", type=int, metavar="N", help="seconds before the message may be processed (0-900)")
    send.add_argument("--idempotency-key", metavar="K", help="a retry with the same key is not sent twice")
    send.add_argument("--group-id", metavar="G", help="the message group (required by FIFO types, in order per group)")
    send.add_argument("--deduplication-id", metavar="D", help="FIFO types: one message per id within 5 minutes")

    batch = commands.add_parser(
        "send-batch",
        help="validate and send many messages",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument(
        "file",
        metavar="FILE.json",
        help='a JSON list of envelopes {"type", "payload", ...}, or JSON lines; - reads stdin',
    )

    schemas = commands.add_parser("schemas", help="list the message types, or print one type's schema")
    schemas.add_argument("type", metavar="TYPE", nargs="?", help="print this type's JSON Schema")

    status = commands.add_parser("status", help="a message's status: state, attempts, errors, history")
    status.add_argument("id", metavar="ID", help="the message id a send answered")
    status.add_argument(
        "--wait", type=float, metavar="SECONDS", help="wait up to this long (0-30) for a change or a final state"
    )

    dlq = commands.add_parser("dlq", help="dead-letter queues")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_commands.add_parser("list", help="the depths of every queue and its dead-letter queue")
    show = dlq_commands.add_parser("show", help="show dead letters of a type; they stay on the queue")
    show.add_argument("type", metavar="TYPE")
    show.add_argument("--limit", type=int, default=10, metavar="N", help="the most shown, 1-100 (default 10)")
    redrive = dlq_commands.add_parser("redrive", help="move dead letters of a type back to its queue")
    redrive.add_argument("type", metavar="TYPE")
    redrive.add_argument("--id", dest="ids", action="append", metavar="ID", help="move only this message (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `qm` command; returns its exit code."""
    args = build_parser().parse_args(argv)
    if args.attempts < 1:
        print("qm: --attempts must be at least 1.", file=sys.stderr)
        return EXIT_INVALID
    client = QMClient(args.url, args.api_key, timeout_seconds=args.timeout, max_attempts=args.attempts)
    try:
        return _run(client, args)
    except ValidationFailed as exc:
        _print_violations(exc, sys.stderr)
        return EXIT_INVALID
    except Unavailable as exc:
        print(f"qm: the API is unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ApiError as exc:
        print(f"qm: the API refused the request: {exc}", file=sys.stderr)
        for error in exc.problem.get("errors", []) or []:
            print(f"  {error.get('path') or '/'}: {error.get('message')} ({error.get('keyword')})", file=sys.stderr)
        return EXIT_REFUSED
    except _InputError as exc:
        print(f"qm: {exc}", file=sys.stderr)
        return EXIT_INVALID


def _run(client: QMClient, args: argparse.Namespace) -> int:
    if args.command == "send":
        payload = _load_json(args.payload)
        answer = client.send(
            args.type,
            payload,
            delay_seconds=args.delay,
            idempotency_key=args.idempotency_key,
            group_id=args.group_id,
            deduplication_id=args.deduplication_id,
        )
        _print_json(answer)
        return EXIT_OK
    if args.command == "send-batch":
        answer = client.send_batch(_load_envelopes(args.file))
        _print_json(answer)
        return EXIT_OK if all(r.get("status") == 202 for r in answer["results"]) else EXIT_REFUSED
    if args.command == "schemas":
        _print_json(client.schema(args.type) if args.type else client.schemas())
        return EXIT_OK
    if args.command == "status":
        if args.wait is not None and not 0 <= args.wait <= 30:
            raise _InputError(f"--wait must be between 0 and 30 seconds, not {args.wait:g}.")
        _print_json(client.status(args.id, wait_seconds=args.wait))
        return EXIT_OK
    if args.dlq_command == "list":
        _print_depths(client.queues(), sys.stdout)
        return EXIT_OK
    if args.dlq_command == "show":
        if not 1 <= args.limit <= 100:
            raise _InputError(f"--limit must be between 1 and 100, not {args.limit}.")
        _print_json(client.dead_letters(args.type, limit=args.limit))
        return EXIT_OK
    answer = client.redrive(args.type, args.ids)
    _print_json(answer)
    missed = [*answer.get("not_found", []), *answer.get("failed", [])]
    if missed:
        print(f"qm: {len(missed)} of the ids asked for were not moved: {', '.join(missed)}.", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


class _InputError(ValueError):
    """Raised when an input file is missing or not JSON."""


def _read(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise _InputError(f"cannot read {name}: {exc.strerror}.") from None


def _load_json(name: str) -> Any:
    try:
        return json.loads(_read(name))
    except json.JSONDecodeError as exc:
        raise _InputError(f"{name} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None


def _load_envelopes(name: str) -> list[Any]:
    """A JSON list of envelopes, `{"messages": [...]}`, or one envelope per line."""
    text = _read(name)
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
        lines: list[Any] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise _InputError(f"{name} line {number} is not JSON: {exc.msg}.") from None
        return lines
    if isinstance(document, dict) and isinstance(document.get("messages"), list):
        return list(document["messages"])
    if isinstance(document, list):
        return document
    return [document]  # one envelope on one line


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def _print_violations(exc: ValidationFailed, out: TextIO) -> None:
    print(f"qm: {exc.detail} Nothing was sent.", file=out)
    for v in exc.violations:
        print(f"  {v.path or '/'}: {v.message} ({v.keyword})", file=out)


def _print_depths(answer: dict[str, Any], out: TextIO) -> None:
    rows = [("TYPE", "VISIBLE", "IN FLIGHT", "DELAYED", "DLQ VISIBLE", "DLQ IN FLIGHT")]
    for q in answer.get("queues", []):
        dlq = q.get("dead_letter", {})
        rows.append(
            (
                q["type"],
                str(q.get("visible")),
                str(q.get("in_flight")),
                str(q.get("delayed")),
                str(dlq.get("visible")),
                str(dlq.get("in_flight")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)


if __name__ == "__main__":
    sys.exit(main())
