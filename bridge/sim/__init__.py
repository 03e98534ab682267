"""A REDCap API simulator for tests, benchmarks and the demo (REDCap itself cannot run here).

It serves the API over real HTTP on loopback and reproduces the REDCap behaviour the bridge
depends on (see ``/work/shared/reference/redcap-api.md``): import/export semantics,
validation, error texts and status codes, and the IP ban for exceeding the rate limit.
"""

from bridge.sim.generate import generate_project
from bridge.sim.model import SimProject
from bridge.sim.schema import make_metadata
from bridge.sim.server import Call, Fault, RedcapSimulator, most_in_window

__all__ = [
    "Call",
    "Fault",
    "RedcapSimulator",
    "SimProject",
    "generate_project",
    "make_metadata",
    "most_in_window",
]
