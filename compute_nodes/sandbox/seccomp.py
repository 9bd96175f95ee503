"""A seccomp filter for the worker (x86_64): the system calls no product needs and that
widen the kernel's attack surface or reach outside fail with EPERM.

Denied: ``socket`` (no socket of any family, on top of the empty network namespace; a
``socketpair`` stays possible), ``ptrace`` and ``process_vm_*``, every mount and namespace
call (``unshare``, ``setns``, ``clone`` with a ``CLONE_NEW*`` flag; ``clone3`` answers ENOSYS
so the C library falls back to ``clone``), keyrings, ``bpf``, ``perf_event_open``,
``userfaultfd``, io_uring, module and kexec loading, and the x32 ABI. A foreign architecture
kills the process. Everything else is allowed: this is a deny list, not a profile.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct
from pathlib import Path

AUDIT_ARCH_X86_64 = 0xC000003E
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
LD_W_ABS = 0x20
JEQ = 0x15
JGE = 0x35
JSET = 0x45
RET = 0x06
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
X32_BIT = 0x40000000
#: CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME
CLONE_NEW_ANY = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 \
    | 0x20000000 | 0x40000000 | 0x00000080

#: x86_64 numbers of the denied calls (asm/unistd_64.h)
DENIED_X86_64 = {
    "socket": 41, "ptrace": 101, "syslog": 103, "uselib": 134, "vhangup": 153,
    "pivot_root": 155, "chroot": 161, "acct": 163, "mount": 165, "umount2": 166,
    "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "lookup_dcookie": 212,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
    "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "finit_module": 313,
    "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
}
NR_CLONE = 56
NR_CLONE3 = 435


def supported() -> str | None:
    """None if the filter can be built here, else why not."""
    if platform.machine() != "x86_64":
        return f"seccomp filter: only x86_64 is described, not {platform.machine()}"
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    if "\nSeccomp:" not in status:
        return "seccomp filter: this kernel has no seccomp"
    return None


def program() -> list[tuple[int, int, int, int]]:
    """The filter as classic BPF instructions ``(code, jt, jf, k)``."""
    deny, enosys, allow = "deny", "enosys", "allow"
    ops: list[tuple[int, object, object, int]] = [
        (LD_W_ABS, 0, 0, 4),                                   # A = arch
        (JEQ, 1, 0, AUDIT_ARCH_X86_64),
        (RET, 0, 0, RET_KILL_PROCESS),
        (LD_W_ABS, 0, 0, 0),                                   # A = nr
        (JGE, deny, 0, X32_BIT),
    ]
    ops += [(JEQ, deny, 0, nr) for nr in sorted(DENIED_X86_64.values())]
    ops += [
        (JEQ, enosys, 0, NR_CLONE3),
        (JEQ, 0, allow, NR_CLONE),
        (LD_W_ABS, 0, 0, 16),                                  # A = low half of args[0]
        (JSET, deny, allow, CLONE_NEW_ANY),
    ]
    labels = {allow: len(ops), deny: len(ops) + 1, enosys: len(ops) + 2}
    ops += [(RET, 0, 0, RET_ALLOW), (RET, 0, 0, RET_ERRNO | errno.EPERM),
            (RET, 0, 0, RET_ERRNO | errno.ENOSYS)]

    def jump(at: int, target: object) -> int:
        return target if isinstance(target, int) else labels[str(target)] - at - 1

    return [(code, jump(i, jt), jump(i, jf), k) for i, (code, jt, jf, k) in enumerate(ops)]


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(libc: ctypes.CDLL) -> None:
    """Install the filter on this (single-threaded) process; no_new_privs must be set."""
    code = b"".join(struct.pack("=HBBI", *op) for op in program())
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _Fprog(len(code) // 8, ctypes.addressof(buf))
    zero = ctypes.c_ulong(0)
    if libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                  ctypes.byref(prog), zero, zero) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter: {errno.errorcode.get(err, err)}")
