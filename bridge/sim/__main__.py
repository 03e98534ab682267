"""``python -m bridge.sim``: a simulator with a generated example project, for the demo.

Prints the API URL and token, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from bridge.sim.generate import generate_project
from bridge.sim.server import RedcapSimulator


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.sim",
        description="Run the REDCap API simulator with a generated example project.",
    )
    parser.add_argument("--records", type=int, default=1000, help="records to generate")
    parser.add_argument(
        "--shared-fraction",
        type=float,
        default=0.05,
        help="fraction of phone numbers stored on two records",
    )
    parser.add_argument("--longitudinal", action="store_true", help="two events, not classic")
    parser.add_argument("--seed", type=int, default=1, help="seed for the generated data")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to answers")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument(
        "--rate-limit", type=int, default=600, help="requests per minute before the IP ban (0: off)"
    )
    args = parser.parse_args(argv)

    project, numbers = generate_project(
        args.records, args.shared_fraction, args.seed, args.longitudinal
    )
    simulator = RedcapSimulator(
        rate_limit_per_minute=args.rate_limit or None, latency_seconds=args.latency, port=args.port
    )
    token = simulator.add_project(project)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    simulator.start()
    print(f"API URL: {simulator.api_url}")
    print(f"token:   {token}")
    print(f"project: {args.records} records, {len(numbers)} distinct phone numbers", flush=True)
    try:
        stop.wait()
    finally:
        simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
