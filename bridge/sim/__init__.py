"""A REDCap API simulator for tests, benchmarks and the demo (REDCap itself cannot run here).

It reproduces the REDCap behaviour the bridge depends on (see
``/work/shared/reference/redcap-api.md``): import/export semantics, validation, and error
texts.
"""

from bridge.sim.model import SimProject
from bridge.sim.schema import make_metadata

__all__ = ["SimProject", "make_metadata"]
