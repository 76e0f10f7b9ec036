"""Wait until the SQS endpoint answers, then run a command: `python -m queue_manager.sqs.wait CMD ARGS...`.

Used by supervisord so the API and the workers start after the local SQS server.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request

#: How long to wait for the endpoint before starting the command anyway.
WAIT_SECONDS = 60.0


def endpoint_answers(url: str) -> bool:
    """True when anything answers HTTP at `url` (an error status counts: the server is up)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m queue_manager.sqs.wait COMMAND [ARGS...]")
    url = os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL")
    if url:
        deadline = time.monotonic() + WAIT_SECONDS
        while not endpoint_answers(url):
            if time.monotonic() > deadline:
                print(f"SQS at {url} did not answer in {WAIT_SECONDS:.0f} s; starting anyway.", file=sys.stderr)
                break
            time.sleep(0.2)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
