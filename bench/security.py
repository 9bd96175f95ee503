"""``dataledger bench security``: what signed decisions and usage controls cost.

- **Signed against unsigned decisions**: ``dataledger serve`` (in development mode, so that
  it takes both) admits fresh pending participants, the same command with and without a
  signature, alternating in rounds on the same server: the time per command at the same
  concurrency, and the server's CPU per command. Goal: a signed command costs at most 15%
  more time (the Ed25519 check runs in a worker thread, off the event loop). The bodies are
  signed by the bench before the clock starts: the client's signing is not the server's cost.
- **Policy evaluation per access** with 10,000 earlier accesses on the contract (counters
  from the read model): ``bench/security_policy.py``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from bench.append.load import Request, raw_load
from bench.append.server import cpu_seconds, running_server
from bench.databases import Scratch
from bench.table import Row, all_met, now

GOAL_RATIO = 1.15


@dataclass(frozen=True)
class SecuritySizes:
    """Commands per kind and round, the rounds, and the connections in flight."""

    per_round: int
    rounds: int
    concurrency: int = 16
    server_start_timeout: float = 60.0


FULL = SecuritySizes(per_round=1500, rounds=3)
QUICK = SecuritySizes(per_round=60, rounds=1)


class PathRequest(Request):
    """A request whose path differs per request number (``path_of(i)``)."""

    def __init__(self, method: str, path_of: Any, headers: dict[str, str], body: Any) -> None:
        super().__init__(method, "", headers, body)
        self.path_of = path_of

    def encode(self, i: int) -> bytes:
        self.path = self.path_of(i)
        return super().encode(i)


async def _onboard(client: Any, admin: dict[str, str], count: int, tag: str) -> list[str]:
    """``count`` pending providers (their ids), onboarded 16 at a time."""
    ids: list[str] = []

    async def one(i: int) -> None:
        made = await client.post("/participants", headers=admin, json={
            "name": f"bench {tag} {i}", "role": "provider",
            "credit_code": "91110000MA01ABCDEP", "admin_name": "admin"})
        made.raise_for_status()
        ids.append(made.json()["participant_id"])

    for start in range(0, count, 16):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + 16))))
    return ids


async def _signing(base: str, pid: int, admin_token: str,
                   sizes: SecuritySizes) -> dict[str, Any]:
    import httpx

    from core import decision

    admin = {"Authorization": f"Bearer {admin_token}"}
    port = int(base.rsplit(":", 1)[1])
    key = decision.new_private_key()
    body = {"approve": True, "comment": "bench"}
    async with httpx.AsyncClient(base_url=base, timeout=60.0) as client:
        me = (await client.get("/participants/me", headers=admin)).json()
        member, platform = me["member_id"], me["participant"]["id"]
        (await client.post(f"/participants/{platform}/keys", headers=admin, json={
            "public_key": decision.public_key_text(key.public_key())})).raise_for_status()
        total = sizes.per_round * sizes.rounds
        unsigned_ids = await _onboard(client, admin, total + 5, "unsigned")
        signed_ids = await _onboard(client, admin, total + 5, "signed")
    # a registered participant is at version 2 (registered, its first admin added)
    signed_bodies = [decision.signed_body(key, "participant.admission", p, 2, member, body)
                     for p in signed_ids]
    kinds = {
        "unsigned": PathRequest("POST", lambda i: f"/participants/{unsigned_ids[i]}/admission",
                                admin, lambda i: body),
        "signed": PathRequest("POST", lambda i: f"/participants/{signed_ids[i]}/admission",
                              admin, lambda i: signed_bodies[i])}
    # warm both paths (the first 5 of each list)
    for request in kinds.values():
        await raw_load(port, request, 30.0, 5, 1)
    tallies: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for r in range(sizes.rounds):
        for kind, request in kinds.items():  # the baseline and the signed alternate
            offset = 5 + r * sizes.per_round
            shifted = PathRequest("POST", lambda i, q=request, o=offset: q.path_of(i + o),
                                  admin, lambda i, q=request, o=offset: q.body(i + o))
            cpu0 = cpu_seconds(pid)
            tally = await raw_load(port, shifted, 600.0, sizes.per_round, sizes.concurrency)
            cpu1 = cpu_seconds(pid)
            tallies[kind].append({"ok": tally.ok, "errors": tally.errors,
                                  "first_error": tally.first_error,
                                  "seconds": tally.seconds,
                                  "server_cpu_s": None if cpu0 is None or cpu1 is None
                                  else cpu1 - cpu0})
    return {kind: _merged(runs) for kind, runs in tallies.items()}


def _merged(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = sum(r["ok"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    cpu = [r["server_cpu_s"] for r in runs]
    out: dict[str, Any] = {
        "commands": ok, "errors": sum(r["errors"] for r in runs),
        "first_error": next((r["first_error"] for r in runs if r["first_error"]), None),
        "seconds": round(seconds, 3),
        "ms_per_command": round(1000 * seconds / ok, 4) if ok else None}
    if ok and None not in cpu:
        out["server_cpu_ms_per_command"] = round(1000 * sum(cpu) / ok, 4)
    return out


def measure_signing(backend: str, sizes: SecuritySizes) -> dict[str, Any]:
    """Signed and unsigned admissions against one ``dataledger serve`` on ``backend``."""
    admin_token = "bench" + secrets.token_hex(16)[:27]
    scratch = Scratch(backend, "dataledger-bench-security-")
    notes: list[str] = []
    try:
        workdir = scratch.tmp
        env = {"DATALEDGER_ADMIN_TOKEN": admin_token, "DATALEDGER_DATA_DIR": str(workdir),
               "DATALEDGER_ALLOW_UNSIGNED_DECISIONS": "1", "DATALEDGER_COMPUTE_NODE": "false",
               "DATALEDGER_DATABASE_URL": scratch.database_url("signing")}
        with running_server(env, workdir, sizes.server_start_timeout) as (proc, base):
            started = now()
            measured = asyncio.run(_signing(base, proc.pid, admin_token, sizes))
    finally:
        scratch.cleanup(notes)
    return {"notes": notes, "backend": backend, "started_at": started, "concurrency": sizes.concurrency,
            **measured}


def signing_rows(backend: str, result: dict[str, Any]) -> list[Row]:
    unsigned, signed = result["unsigned"], result["signed"]
    base, cost = unsigned.get("ms_per_command"), signed.get("ms_per_command")
    ratio = cost / base if base and cost else None
    rows = [Row(backend, "signed_decision",
                f"POST /participants/{{id}}/admission signed, {result['concurrency']} conn.",
                f"{cost} ms/command" if cost else "-",
                f"{base} ms unsigned" if base else "-",
                "-" if ratio is None else f"{ratio:.3f}x", f"<= {GOAL_RATIO}x",
                None if ratio is None else ratio <= GOAL_RATIO, result)]
    cpu_s, cpu_u = signed.get("server_cpu_ms_per_command"), \
        unsigned.get("server_cpu_ms_per_command")
    if cpu_s and cpu_u:
        rows.append(Row(backend, "signed_decision_cpu", "server CPU per command (for "
                        "information)", f"{cpu_s} ms", f"{cpu_u} ms unsigned",
                        f"{cpu_s / cpu_u:.3f}x"))
    return rows


def run(backends: list[str], quick: bool) -> dict[str, Any]:
    """The whole suite; what run.py prints and writes."""
    from bench.security_policy import measure_policy, policy_rows

    sizes = QUICK if quick else FULL
    results: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    notes = [("signed_decision: the same admission command with and without a signature, "
              "alternating rounds on one server in development mode; bodies signed before "
              "the clock starts")]
    for backend in backends:
        t0 = time.monotonic()
        result: dict[str, Any] = {"backend": backend}
        try:
            print(f"  {backend}: signed against unsigned decisions ...", flush=True)
            result["signing"] = measure_signing(backend, sizes)
            table += [r.as_json() for r in signing_rows(backend, result["signing"])]
            print(f"  {backend}: policy evaluation per access ...", flush=True)
            result["policy"] = measure_policy(backend, quick)
            table += [r.as_json() for r in policy_rows(backend, result["policy"])]
        except Exception as exc:  # noqa: BLE001 - one backend failing is reported
            result["error"] = repr(exc)
        result["wall_seconds"] = round(time.monotonic() - t0, 1)
        results.append(result)
    return {"suite": "security", "quick": quick, "sizes": asdict(sizes), "results": results,
            "table": table, "all_goals_met": all_met(table), "notes": notes}
