"""A provider's masked part of a joint execution (``domain.joint``), as its node posts it.

The part is ``core.secagg.MaskedPart``: a header (format, execution id, provider, the
providers' list, length in 64-bit words, the layout's SHA-256, the body's SHA-256) and the
body. The ledger checks the header against the joint before anything is stored and again
when it records it, so a part the aggregation node would refuse never gets in: masked for
another execution (a replay), for another list of providers, over another layout than the
joint recorded (its masks would not cancel the others'), by another provider, of the
wrong length, a body that does not match its hash, or a second, different part of one
provider (each 409 ``part_refused`` naming the reason and the field). The same part again is
answered as recorded, writing nothing.

Recorded as the provider's ``computation.succeeded`` (``result_sha256`` the part's digest,
``result_rows`` the layout's length; never a ``delivery.made``) and ``joint.part_received``
in one unit of work. A part that comes after the policy lapsed (the rules of a result post,
``domain.execution_rules.lapse_refusal``) fails the computation and the joint instead; one
that comes at or after the joint's deadline fails the joint (``missing: …``, as the
deadline sweep would): ``check_part`` raises ``LatePart`` for it, so the route stores
nothing and has ``record_part`` record the failure.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from core.canonical import canonical_bytes
from core.secagg import FORMAT
from domain.base import Context
from domain.computation import (
    Computation,
    check_input_hashes,
    fail_computation,
)
from domain.dataset import require_text
from domain.errors import InvalidInput, PartRefused, WrongState
from domain.execution_rules import lapse_refusal
from domain.joint import JointExecution, find_joint, joint_id
from domain.permissions import permit
from domain.unit_of_work import UnitOfWork

HEADER_KEYS = ("format", "execution_id", "provider_id", "providers", "length", "layout_sha256",
               "body_sha256")


@dataclass(frozen=True)
class PartPost:
    """A masked part as posted: its header, and what the caller measured of its body."""

    header: dict[str, Any]
    #: the body's size in bytes and its SHA-256 (hex), as received (None: no base64)
    body_size: int
    body_sha256: str | None

    def digest(self) -> str:
        """``MaskedPart.digest()``: SHA-256 of the canonical header."""
        return hashlib.sha256(canonical_bytes(self.header)).hexdigest()


class LatePart(WrongState):
    """A part posted at or after its joint's deadline: the joint fails (``record_part``
    records ``joint.failed``, ``missing: …``), the part is not taken."""


def _refuse(reason: str, field: str, detail: str) -> PartRefused:
    return PartRefused(f"{reason}: {detail}", reason=reason, field=f"header.{field}")


def _check_header(joint: JointExecution, post: PartPost, provider_id: str) -> None:
    """The header names this execution, its providers, the poster, the layout's length,
    and the body it came with (``PartRefused``, the reason as ``core.secagg`` words it)."""
    h = post.header
    if post.body_sha256 is None:
        raise InvalidInput("body", "must be base64 of the part's body")
    if sorted(h) != sorted(HEADER_KEYS) or h["format"] != FORMAT:
        raise _refuse("format", "format", f"a part header has exactly {', '.join(HEADER_KEYS)}"
                                          f" and the format {FORMAT!r}")
    if h["execution_id"] != joint.id:
        raise _refuse("execution", "execution_id", f"a part masked for another execution "
                      f"({h['execution_id']!r}, not joint {joint.id})")
    if h["providers"] != joint.providers:
        raise _refuse("providers", "providers", f"the part was masked for the providers "
                      f"{h['providers']!r}, not the joint's {joint.providers!r}")
    if h["layout_sha256"] != joint.layout_sha256:
        raise _refuse("layout", "layout_sha256", f"the part was laid out over the layout "
                      f"{h['layout_sha256']!r}, not the joint's {joint.layout_sha256!r}")
    if h["provider_id"] != provider_id:
        raise _refuse("unknown", "provider_id", f"the part is {h['provider_id']!r}'s, posted "
                      f"for provider {provider_id}'s computation")
    length = h["length"]
    if (isinstance(length, bool) or length != joint.part_length
            or post.body_size != 8 * joint.part_length):
        raise _refuse("length", "length", f"the joint takes parts of {joint.part_length} "
                      f"words ({joint.length} keys x {len(joint.value_columns)} value "
                      f"columns); this one says {length!r} and its body has "
                      f"{post.body_size} bytes")
    if h["body_sha256"] != post.body_sha256:
        raise _refuse("body", "body_sha256", "the body does not match its header's sha256")


def _checked(uow: UnitOfWork, ctx: Context, computation_id: str,
             post: PartPost) -> tuple[Computation, JointExecution, str, bool]:
    """The computation, its joint, the part's digest, and whether this very part is
    recorded already; raises if the ledger will not take it (``LatePart``: a new part at
    or after the joint's deadline)."""
    permit(ctx.actor, "computation.masked_part")
    agg = uow.get(Computation, computation_id)
    agg.require_reporter(ctx.actor)
    joint = find_joint(uow, joint_id(agg.contract_id, agg.execution))
    if agg.execution < 1 or joint is None:
        raise WrongState(f"computation {agg.id} is no part of a joint execution: post its "
                         "result (POST /computations/{id}/result)", state=agg.state)
    joint.require_open("receive a part")
    joint.require_state(["layout_published"], "receive a part (its layout is not published)")
    _check_header(joint, post, agg.provider_id)
    digest = post.digest()
    recorded = joint.parts.get(agg.provider_id)
    if recorded == digest:
        return agg, joint, digest, True
    if recorded is not None:
        raise _refuse("duplicate", "body_sha256", f"provider {agg.provider_id} sent another "
                      f"part already ({recorded}); one part per provider")
    agg.require_state(["requested"], "record a part")
    if joint.past_deadline(ctx.at):
        raise LatePart(f"joint {joint.id}'s deadline {joint.deadline} has passed: the part "
                       f"of provider {agg.provider_id} is not taken, and the joint fails "
                       f"({joint.missing_reason()})", state=joint.state)
    return agg, joint, digest, False


def check_part(uow: UnitOfWork, ctx: Context, computation_id: str, post: PartPost) -> None:
    """Whether the actor may post this part (asked with ``Ledger.check`` before its bytes
    are stored): the checks of ``record_part`` that need no input hashes. ``LatePart``
    past the deadline: the caller stores nothing and has ``record_part`` fail the joint."""
    _checked(uow, ctx, computation_id, post)


def _answer(agg: Computation, joint: JointExecution, digest: str | None,
            existing: bool = False) -> dict[str, Any]:
    reason = (agg.reason if agg.state == "failed" else
              joint.reason if joint.state == "failed" else None)
    return {"computation_id": agg.id, "joint_id": joint.id, "digest": digest,
            "state": agg.state, "joint_state": joint.state, "complete": joint.complete(),
            "existing": existing, "reason": reason}


def record_part(uow: UnitOfWork, ctx: Context, computation_id: str, post: PartPost, *,
                input_hashes: dict[str, str], datasite: str) -> dict[str, Any]:
    """Record a provider's masked part (its bytes stored by the caller): the provider's
    ``computation.succeeded`` with the part's digest and ``joint.part_received``; or, if
    the policy lapsed while the code ran, its ``computation.failed`` and ``joint.failed``
    (``policy_lapsed: …``; the answer's ``state`` is failed); or, at or after the joint's
    deadline, ``joint.failed`` (``missing: …``). Either refusal answers ``digest`` None."""
    try:
        agg, joint, digest, repeat = _checked(uow, ctx, computation_id, post)
    except LatePart:
        agg = uow.get(Computation, computation_id)
        joint = uow.get(JointExecution, joint_id(agg.contract_id, agg.execution))
        joint.fail(ctx, reason=joint.missing_reason())
        return _answer(agg, joint, None)
    if repeat:
        return _answer(agg, joint, digest, existing=True)
    if require_text(datasite, "datasite") != agg.datasite:
        raise InvalidInput("datasite", f"computation {agg.id} was requested on datasite "
                                       f"{agg.datasite!r}")
    hashes = check_input_hashes(uow, agg, input_hashes)
    lapsed = lapse_refusal(uow, ctx, agg)
    if lapsed is not None:
        fail_computation(uow, ctx, agg, lapsed)
        return _answer(agg, joint, None)
    agg.succeed(ctx, result_sha256=digest, input_hashes=hashes, result_rows=joint.length,
                datasite=datasite, deliver=False)
    joint.receive_part(ctx, provider_id=agg.provider_id, computation_id=agg.id, digest=digest)
    return _answer(agg, joint, digest)
