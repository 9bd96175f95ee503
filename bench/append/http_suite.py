"""The HTTP measurements: ``GET /noop`` (the baseline) and the command, alternating, against
``dataledger serve``; then, for information, the no-op through one ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.append.load import Request, Tally, httpx_load, raw_load
from bench.append.measure import Measure, Sizes, merge
from bench.append.server import cpu_seconds, running_server
from bench.append.workload import Workload
from bench.table import now
from core.tokens import hash_token, new_token


def measure_http(server_env: dict[str, str], workdir: Path, workload: Workload, sizes: Sizes,
                 offset: int, *, index: bool = True) -> tuple[list[Measure], list[str]]:
    """Start the server (``server_env`` plus an admin token; its log in ``workdir``) and
    measure over HTTP; the ``i``-th command uses the workload's arguments ``offset + i``.
    ``index=False``: the server keeps no per-actor index (``DATALEDGER_ACTOR_INDEX=false``),
    its rows keyed ``..._noindex`` and no client check."""
    admin_token = "bench" + secrets.token_hex(16)[:27]  # 32 characters
    env = {**server_env, "DATALEDGER_ADMIN_TOKEN": admin_token}
    if not index:
        env["DATALEDGER_ACTOR_INDEX"] = "false"
    with (running_server(env, workdir, sizes.server_start_timeout) as (proc, base_url),
          asyncio.Runner(loop_factory=_loop_factory()) as runner):
        return runner.run(_http_suite(base_url, proc.pid, admin_token, workload, sizes, offset,
                                      "" if index else _NO_INDEX))


_NO_INDEX = "_noindex"


async def _timed(key: str, label: str, pid: int, load: Awaitable[Tally],
                 commands: bool, settle: Callable[[], Awaitable[float]] | None = None
                 ) -> Measure:
    """Run one load, with the CPU the server and this client spent on it; with ``settle``,
    also the server's CPU until its chain has caught up with what the load wrote."""
    started = now()
    server0, client0 = cpu_seconds(pid), time.process_time()
    tally = await load
    server1, client1 = cpu_seconds(pid), time.process_time()
    ok = tally.ok
    extra: dict[str, Any] = {"statuses": {str(k): v for k, v in tally.statuses.items()},
                             "client_cpu_s": round(client1 - client0, 3)}
    if server0 is not None and server1 is not None:
        extra["server_cpu_s"] = round(server1 - server0, 3)
        if ok:
            extra["server_cpu_ms_per_request"] = round(1000 * (server1 - server0) / ok, 3)
    if settle is not None:
        extra["settle_s"] = round(await settle(), 3)
        server2 = cpu_seconds(pid)
        if server0 is not None and server2 is not None:
            extra["server_cpu_settled_s"] = round(server2 - server0, 3)
            if ok:
                extra["server_cpu_ms_per_request_settled"] = round(
                    1000 * (server2 - server0) / ok, 3)
    if ok:
        extra["client_cpu_ms_per_request"] = round(1000 * (client1 - client0) / ok, 3)
    return Measure(key, label, "requests/s", ok, tally.seconds, started,
                   commands=ok if commands else None, errors=tally.errors,
                   first_error=tally.first_error, extra=extra)


async def _http_suite(base: str, pid: int, admin_token: str, workload: Workload,
                      sizes: Sizes, offset: int, suffix: str) -> tuple[list[Measure], list[str]]:
    import httpx

    notes: list[str] = []
    port = int(base.rsplit(":", 1)[1])
    admin = {"Authorization": f"Bearer {admin_token}"}
    c = sizes.http_concurrency
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30.0) as client:
        command = await _command_request(client, admin, workload, offset, notes)
        noop = Request("GET", "/noop", {})
        for request in (noop, command):  # warm the connections and the code paths
            await raw_load(port, request, sizes.http_warmup, sizes.max_count, c)
        secs = sizes.http_seconds / sizes.rounds
        noops, commands = [], []
        without = ", no actor index" if suffix else ""
        for _ in range(sizes.rounds):  # the baseline and the command alternate
            noops.append(await _timed(
                "http_noop" + suffix, f"HTTP GET /noop, {c} connections{without}", pid,
                raw_load(port, noop, secs, sizes.max_count, c), False))
            commands.append(await _timed(
                "http_command" + suffix,
                f"HTTP {command.method} {command.path}, {c} connections{without}", pid,
                raw_load(port, command, secs, sizes.max_count, c), True,
                lambda: _chain_caught_up(client)))
        out = [merge(noops), merge(commands)]
        if suffix:
            for m in out:
                m.extra["concurrency"] = c
            return out, notes
        # for information: the same no-op load through one httpx.AsyncClient
        await httpx_load(client, noop, sizes.http_warmup, sizes.max_count, c)
        out.append(await _timed(
            "http_noop_httpx", f"(client check) GET /noop via one httpx.AsyncClient, {c} in flight",
            pid, httpx_load(client, noop, sizes.http_seconds / 2, sizes.max_count, c), False))
    for m in out:
        m.extra["concurrency"] = c
    return out, notes


async def _chain_caught_up(client: Any, timeout: float = 30.0) -> float:
    """Wait until a checkpoint covers the log's head (the chain, and the per-actor index if
    kept, have done the work the load left them); the seconds waited."""
    t0 = time.monotonic()
    head = (await client.get("/health")).json()["head"]
    while time.monotonic() - t0 < timeout:
        latest = await client.get("/ledger/checkpoints/latest")
        if latest.status_code == 200 and latest.json()["size"] >= head:
            break
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def _command_request(client: Any, admin: dict[str, str], workload: Workload, offset: int,
                           notes: list[str]) -> Request:
    """POST /datasets as an admitted provider if the route exists, else POST /participants."""
    participants = Request("POST", "/participants", admin,
                           lambda i: {k: v for k, v in workload.participant_kwargs(offset + i)
                                      .items() if k != "admin_token_hash"})
    try:
        paths = (await client.get("/openapi.json")).json().get("paths", {})
    except Exception as exc:  # noqa: BLE001
        notes.append(f"openapi.json unreadable ({exc!r}); POST /participants used")
        return participants
    if not workload.uses_datasets or "post" not in paths.get("/datasets", {}):
        notes.append("no POST /datasets route (or no domain.dataset): the HTTP command is "
                     "POST /participants (the platform onboards an organization, 2 events)")
        return participants
    token = new_token()  # the provider's own: the platform is sent only its hash
    made = await client.post("/participants", headers=admin, json={
        **(participants.body(10_000_000) if participants.body else {}),
        "admin_token_hash": hash_token(token)})
    if made.status_code != 201:
        notes.append(f"provider setup failed ({made.status_code}); POST /participants used")
        return participants
    pid = made.json()["participant_id"]
    admitted = await asyncio.to_thread(_admit, str(client.base_url), admin, pid)
    datasets = Request("POST", "/datasets", {"Authorization": f"Bearer {token}"},
                       lambda i: workload.dataset_kwargs(offset + i))
    probe = await client.post("/datasets", headers=datasets.headers,
                              json=workload.dataset_kwargs(offset - 1))
    if admitted >= 300 or probe.status_code >= 300:
        notes.append(f"POST /datasets refused ({admitted}/{probe.status_code}: "
                     f"{probe.text[:200]}); POST /participants used")
        return participants
    return datasets


def _admit(base: str, admin: dict[str, str], pid: str) -> int:
    """The platform admits the bench's provider, the decision signed with a key the platform's
    admin registers for it (``client``); the answer's status."""
    from client.platform import Platform

    with Platform.at(base) as api:
        platform = api.give_key(api.party(admin["Authorization"].removeprefix("Bearer ")))
        return api.send("POST", f"/participants/{pid}/admission", platform,
                        json={"approve": True, "comment": "bench"}).status_code


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the client if installed (as uvicorn uses it for the server)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
