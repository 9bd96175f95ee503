"""The sandbox product code runs in: one confined, single-use process per job, kept warm.

Standard library, pandas and numpy only: the compute node (``executor.py``/``datasite.py``)
calls it; it imports neither syft nor any server room. See docs/SANDBOX.md.

    sandbox = Sandbox(limits=Limits(), warm=2, hide=[node_dir])
    result = sandbox.run(code_source, function_name, [frame], timeout_s=None)
    result.value, result.stdout, result.stderr, result.seconds
    sandbox.close()
"""

from .errors import (
    LIMITS,
    CodeRaised,
    LimitExceeded,
    OutputRefused,
    SandboxError,
    SandboxUnavailable,
)
from .job import Result
from .limits import Limits
from .sandbox import Sandbox

__all__ = ["LIMITS", "CodeRaised", "LimitExceeded", "Limits", "OutputRefused", "Result",
           "Sandbox", "SandboxError", "SandboxUnavailable"]
