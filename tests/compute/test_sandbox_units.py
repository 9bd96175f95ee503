"""The sandbox's parts that need no root: the worker's conversion and answers, the node's
reading of an answer it does not trust, frames, errors, the seccomp filter, uid leases.

Runs inside the compute venv: ``compute_nodes/setup-env test``.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compute_nodes.sandbox import (
    CodeRaised,
    LimitExceeded,
    Limits,
    OutputRefused,
    frames,
    seccomp,
    worker,
)
from compute_nodes.sandbox.job import MALFORMED, _answer
from compute_nodes.sandbox.sandbox import exposed_paths, hidden_paths
from compute_nodes.sandbox.uids import Uids

ROOT = Path(__file__).resolve().parents[2]
LIMITS = Limits().as_json()


# -- the worker's side ----------------------------------------------------------------


def test_values_become_plain_json_and_floats_stay_floats() -> None:
    table = pd.DataFrame({"a": [1, 2], "b": [0.5, np.nan], "c": ["x", None],
                          "d": pd.to_datetime(["2024-01-01", None])})
    assert worker.plain(table) == [
        {"a": 1, "b": 0.5, "c": "x", "d": "2024-01-01T00:00:00"},
        {"a": 2, "b": None, "c": None, "d": None},
    ]
    # a Series with a named index: rows (the index's column masked by its grade like any)
    assert worker.plain(table.set_index("c").a) == [{"c": "x", "a": 1}, {"c": None, "a": 2}]
    assert worker.plain(table.groupby("c")["c"].count()) == [{"c": "x", "value": 1}]
    # an index without a name: a dict of index -> value
    assert worker.plain(pd.Series([7, 8], name="n")) == {"0": 7, "1": 8}
    assert worker.plain({1: np.float32(2.5), 2.5: np.int8(3), None: [np.bool_(False)]}) \
        == {"1": 2.5, "2.5": 3, "null": [False]}
    assert worker.plain({True: 1, pd.Timestamp("2024-01-01"): 2}) \
        == {"true": 1, "2024-01-01T00:00:00": 2}
    assert worker.plain([math.inf, -math.inf, 3.0, pd.NA]) == [None, None, 3.0, None]
    assert isinstance(worker.plain(np.float64(3.0)), float)
    assert worker.plain(np.arange(4).reshape(2, 2)) == [[0, 1], [2, 3]]


@pytest.mark.parametrize(("value", "code"), [
    (object(), "type"), ({1, 2}, "type"), (b"bytes", "type"), (pd.Timedelta(1), "type"),
    ({(1, 2): 3}, "key"), ({frozenset(): 1}, "key"),
])
def test_values_without_json_form_are_refused_by_a_fixed_code(value: object, code: str) -> None:
    with pytest.raises(worker.Refused) as refused:
        worker.plain(value)
    assert refused.value.args == (code,)


def test_values_nested_too_deep_are_refused() -> None:
    deep: list = []
    for _ in range(worker.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(worker.Refused, match="depth"):
        worker.plain(deep)


def test_the_code_must_be_one_plain_function() -> None:
    assert worker.check_source("def f(a, b):\n    return a\n", "f").name == "f"
    for source in ["x = 1\ndef f(a):\n    return a\n", "def g(a):\n    return a\n",
                   "@staticmethod\ndef f(a):\n    return a\n", "def f(a=1):\n    return a\n",
                   "def f(*a):\n    return a\n", "async def f(a):\n    return a\n",
                   "class f:\n    pass\n"]:
        with pytest.raises(ValueError, match="function"):
            worker.check_source(source, "f")
    with pytest.raises(SyntaxError):
        worker.check_source("def f(:\n", "f")


def answer(source: str, inputs: list, **limits: object) -> dict:
    return json.loads(worker.run(source, "f", inputs, {**LIMITS, **limits}))


def test_the_worker_answers_the_value_or_what_was_raised() -> None:
    frame = pd.DataFrame({"a": [1, 2]})
    assert answer("def f(t):\n    return t.a.sum()\n", [frame]) == {"ok": 3}
    raised = answer("def f(t):\n    raise KeyError('secret 42')\n", [frame])
    assert raised["raised"] == "KeyError" and raised["limit"] is None
    assert "secret 42" in raised["detail"] and 'File "<product>", line 2' in raised["detail"]
    assert answer("def f():\n    return object()\n", []) == {"refused": "type"}
    assert answer("def f():\n    raise MemoryError\n", [])["limit"] == "memory"
    assert answer("def f():\n    import errno\n    raise OSError(errno.EFBIG, 'big')\n",
                  [])["limit"] == "file_size"
    assert answer("def f():\n    raise BlockingIOError(11, 'fork')\n", [])["limit"] \
        == "processes"
    assert answer("def f():\n    return 'x' * 100\n", [], output_bytes=50) \
        == {"limit": "output_size"}
    assert answer("def f():\n    raise SystemExit(3)\n", [])["raised"] == "SystemExit"
    long = answer("def f():\n    raise ValueError('y' * 10000)\n", [], print_bytes=100)
    assert len(long["detail"]) <= 106


def test_annotations_are_not_evaluated() -> None:
    assert answer("def f(t: NoSuchType) -> Missing:\n    return 1\n", [None]) == {"ok": 1}


# -- the node's side ------------------------------------------------------------------


def read(frame: bytes) -> object:
    return _answer(frame, Limits())


def test_an_answer_is_read_as_untrusted_json() -> None:
    assert read(b'{"ok": [1, 2.5, "x", null]}') == [1, 2.5, "x", None]
    for hostile in [b"\x80\x04N.", b"[" * 100_000 + b"]" * 100_000, b'{"ok": NaN}',
                    b'{"ok": Infinity}', b'{"ok": ' + b"9" * 5000 + b"}", b"[]", b'{"ok": 1,',
                    b'{"ok": 1, "more": 2}', b'{"refused": "secret-value"}',
                    b'{"raised": 1, "detail": "", "limit": null}']:
        with pytest.raises(OutputRefused) as refused:
            read(hostile)
        assert refused.value.reason in {MALFORMED} or "secret" not in refused.value.reason


def test_the_reported_kind_and_limit_are_checked() -> None:
    with pytest.raises(CodeRaised) as raised:
        read(b'{"raised": "Not an identifier!", "detail": "d", "limit": null}')
    assert raised.value.kind == "Exception" and raised.value.detail == "d"
    with pytest.raises(CodeRaised) as raised:
        read(json.dumps({"raised": "E" * 101, "detail": "", "limit": "bogus"}).encode())
    assert raised.value.kind == "Exception"
    with pytest.raises(LimitExceeded) as limit:
        read(b'{"raised": "MemoryError", "detail": "tb", "limit": "memory"}')
    assert (limit.value.which, limit.value.detail) == ("memory", "tb")
    with pytest.raises(OutputRefused):
        read(b'{"limit": "bogus"}')


def test_errors_say_nothing_of_the_code_in_their_text() -> None:
    secret = "tax_paid=123"
    raised = CodeRaised("ValueError", f"ValueError: {secret}")
    assert secret not in str(raised) and secret not in repr(raised)
    assert str(LimitExceeded("memory")) == "the job exceeded its memory limit"
    assert LimitExceeded("whatever").which == "killed"


def test_frames_are_read_whole_and_capped() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.setblocking(False)
        reader = frames.FrameReader(right, 10)
        left.sendall(frames.HEADER.pack(5)[:3])
        reader.feed()
        assert not reader.done
        left.sendall(frames.HEADER.pack(5)[3:] + b"hel")
        reader.feed()
        assert not reader.done
        left.sendall(b"lo")
        reader.feed()
        assert reader.frame == b"hello"
        big = frames.FrameReader(right, 10)
        left.sendall(frames.HEADER.pack(11))
        big.feed()
        assert big.too_big and big.frame is None
        left.close()
        ended = frames.FrameReader(right, 10)
        ended.feed()
        assert ended.ended


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="memory_bytes"):
        Limits(memory_bytes=0)


# -- confinement parts ----------------------------------------------------------------


def test_the_seccomp_filter_is_well_formed() -> None:
    program = seccomp.program()
    assert len(program) < 256
    for at, (code, jt, jf, _) in enumerate(program):
        if code not in (seccomp.RET, seccomp.LD_W_ABS):
            assert at + 1 + max(jt, jf) < len(program)
    assert [op[0] for op in program[-3:]] == [seccomp.RET] * 3


@pytest.mark.skipif(seccomp.supported() is not None, reason="the filter is x86_64's")
def test_the_seccomp_filter_refuses_sockets_and_namespaces_but_not_fork() -> None:
    probe = f"""
import ctypes, errno, os, socket, sys
sys.path.insert(0, {str(ROOT)!r})
from compute_nodes.sandbox import confine, seccomp
confine.prctl(confine.PR_SET_NO_NEW_PRIVS, 1)
seccomp.install(confine.LIBC)
out = []
try:
    socket.socket()
    out.append("socket")
except PermissionError:
    pass
a, b = socket.socketpair()
if confine.LIBC.unshare(0x10000000) == 0 or ctypes.get_errno() != errno.EPERM:
    out.append("unshare")
pid = os.fork()
if pid == 0:
    os._exit(7)
out.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(out)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.stdout.strip() == "[7]", done.stderr


def test_closing_all_but_some_descriptors_keeps_them() -> None:
    probe = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from compute_nodes.sandbox import confine
r, w = os.pipe()
confine.close_all_but([0, 1, w])
os.write(1, b"kept")
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60,
                          check=False)
    assert done.stdout == b"kept"


def test_hidden_paths_must_exist_and_the_install_stays_exposed(tmp_path: Path) -> None:
    assert tmp_path in hidden_paths([tmp_path])
    assert ROOT / "var" in hidden_paths([])
    with pytest.raises(ValueError, match="does not exist"):
        hidden_paths([tmp_path / "missing"])
    exposed = exposed_paths()
    assert Path(sys.prefix).resolve() in exposed or any(
        p in Path(sys.prefix).resolve().parents for p in exposed)


def test_uid_leases_are_exclusive_across_holders(tmp_path: Path) -> None:
    first, second = Uids(range(5000, 5002), tmp_path), Uids(range(5000, 5002), tmp_path)
    got = {first.claim(), second.claim()}
    assert got == {5000, 5001}
    assert first.claim() is None and second.claim() is None
    first.release_all()
    assert second.claim() in {5000, 5001}
    with pytest.raises(ValueError):
        Uids(range(10), tmp_path)
