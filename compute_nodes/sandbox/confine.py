"""The Linux confinement a worker is built with, through libc (ctypes): namespaces, mounts,
death with the parent, resource limits and the drop to an unprivileged uid.

Python 3.11 has no ``os.unshare`` nor ``os.mount``, hence ctypes. Everything here runs as
root, in the worker's own processes (never in the node's), before any product code.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import resource
import signal
import stat
from collections.abc import Iterable
from pathlib import Path

LIBC = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
#: a worker's namespaces: its own mounts, network (none), pids, IPC, hostname and cgroup view
NAMESPACES = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS \
    | CLONE_NEWCGROUP

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
#: per-mount options kept when a mount is made read-only
KEPT = {"nodev": MS_NODEV, "noexec": MS_NOEXEC, "nosuid": MS_NOSUID}

MNT_DETACH = 2
#: pivot_root's number (Python has no os.pivot_root)
NR_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41}.get(platform.machine())
#: the devices a worker has: name -> (major, minor)
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9)}

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38

#: the working directory: on the private /tmp, owned by the worker's uid, mode 0700
WORKDIR = "/tmp/work"
#: where the worker's root is built (a tmpfs mounted in the worker's own mount namespace
#: only, on an empty directory made for it) before it becomes its root: not under /tmp,
#: where a checkout (and its venvs) may live
NEW_ROOT = "/run/dataledger-sandbox-root"
#: what a worker sees of the system besides the Python install: read-only
SYSTEM = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
          "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
          "/etc/timezone", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts",
          "/etc/alternatives", "/etc/mime.types", "/etc/os-release"]
#: the environment product code sees
ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent",
    "TMPDIR": "/tmp", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1",
}


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prctl(option: int, arg: int = 0) -> None:
    """prctl(option, arg, 0, 0, 0)."""
    zero = ctypes.c_ulong(0)
    _check(LIBC.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), zero, zero, zero),
           f"prctl({option})")


def die_with_parent() -> None:
    """SIGKILL this process when the thread that forked it ends."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def unshare(flags: int = NAMESPACES) -> None:
    """Move this process into new namespaces (its next child is pid 1 of the new pid one)."""
    _check(LIBC.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    """mount(2); OSError naming the target on failure."""
    def raw(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    _check(LIBC.mount(raw(source), raw(target), raw(fstype), ctypes.c_ulong(flags), raw(data)),
           f"mount {target}")


def mountpoints() -> list[tuple[str, int]]:
    """Every mount point of this mount namespace with its kept per-mount flags."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])  # \040...
        flags = 0
        for option in fields[5].split(","):
            flags |= KEPT.get(option, 0)
        points.append((point, flags))
    return points


def build_filesystem(expose: Iterable[str], hide: Iterable[str], uid: int,
                     tmp_bytes: int) -> None:
    """Give this process (root, in a new mount namespace, before the drop) the worker's view
    of the files, and make it its root (``pivot_root``; the host's tree is detached):

    an empty read-only root holding only the ``expose`` paths, bound read-only (the system's
    /usr, /lib..., a few files of /etc, the Python install and its venv), minus the ``hide``
    paths inside them (an empty tmpfs over a directory, /dev/null over a file); a private
    tmpfs on /tmp (``tmp_bytes``) with the working dir :data:`WORKDIR` owned by ``uid``; a
    minimal /dev; an empty /proc for the worker's own."""
    os.umask(0o022)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    os.makedirs(NEW_ROOT, 0o755, exist_ok=True)  # on the host: an empty mount point
    mount("tmpfs", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for name in ("proc", "dev", "tmp"):
        os.makedirs(f"{NEW_ROOT}/{name}", 0o755, exist_ok=True)
    # the private /tmp first: a Python install under the host's /tmp is bound on top of it
    mount("tmpfs", f"{NEW_ROOT}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_bytes},mode=1777")
    exposed = _top_level(expose)
    for path in exposed:
        _expose(path)
    for path in hide:
        if any(_within(path, top) for top in exposed):
            _hide(NEW_ROOT + path)
    for point, flags in mountpoints():
        if point.startswith(NEW_ROOT + "/") and point != f"{NEW_ROOT}/tmp":
            mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
                  | flags)
    os.mkdir(NEW_ROOT + WORKDIR, 0o700)
    os.chown(NEW_ROOT + WORKDIR, uid, uid)
    _minimal_dev(f"{NEW_ROOT}/dev", min(tmp_bytes, 16 << 20))
    mount(None, NEW_ROOT, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(NEW_ROOT)
    if NR_PIVOT_ROOT is None:
        raise OSError(f"pivot_root: its number on {platform.machine()} is not known here")
    _check(LIBC.syscall(ctypes.c_long(NR_PIVOT_ROOT), b".", b"."), "pivot_root")
    _check(LIBC.umount2(b".", ctypes.c_int(MNT_DETACH)), "detach the old root")
    os.chdir("/")


def _top_level(paths: Iterable[str]) -> list[str]:
    """The paths that exist, without those inside another one."""
    found = sorted({p for p in paths if os.path.lexists(p)})
    return [p for p in found if not any(_within(p, q) and p != q for q in found)]


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _expose(path: str) -> None:
    """Make ``path`` appear under :data:`NEW_ROOT`: a symlink as the same symlink, a
    directory or a file bound (read-only once the view is complete)."""
    target = NEW_ROOT + path
    os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
    if os.path.islink(path):
        os.symlink(os.readlink(path), target)
    elif os.path.isdir(path):
        os.mkdir(target, 0o755)
        mount(path, target, None, MS_BIND | MS_REC)
    else:
        Path(target).touch(0o644)
        mount(path, target, None, MS_BIND)


def _hide(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "size=4k,mode=0555")
    elif os.path.lexists(path) and not os.path.islink(path):
        mount("/dev/null", path, None, MS_BIND)


def _minimal_dev(dev: str, shm_bytes: int) -> None:
    """A /dev of its own, read-only: null, zero, full, random, urandom, the fd links and a
    private /dev/shm; none of the host's other devices (disks, kmsg, fuse, tun...)."""
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")
    for name, (major, minor) in DEVICES.items():
        os.mknod(f"{dev}/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(f"{dev}/{name}", 0o666)
    for name, target in {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
                         "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}.items():
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/shm")
    mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          f"size={shm_bytes},mode=1777")
    mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


def mount_proc() -> None:
    """A /proc of this pid namespace (called as its pid 1): the node's processes vanish."""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def set_limits(limits: dict[str, int]) -> None:
    """The rlimits of :class:`~compute_nodes.sandbox.limits.Limits` (as JSON); no core."""
    cpu = int(limits["cpu_time_s"])
    for which, value in [
        (resource.RLIMIT_AS, int(limits["memory_bytes"])),
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_NPROC, int(limits["processes"])),
        (resource.RLIMIT_FSIZE, int(limits["file_bytes"])),
        (resource.RLIMIT_NOFILE, int(limits["open_files"])),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_MSGQUEUE, 0),
    ]:
        soft, hard = value if isinstance(value, tuple) else (value, value)
        resource.setrlimit(which, (soft, hard))


def drop_privileges(uid: int) -> None:
    """Become ``uid``/gid ``uid`` with no supplementary group, no capability (bounding set
    emptied) and no_new_privs; stay dumpable so the code may read its own /proc/self."""
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last + 1):
        prctl(PR_CAPBSET_DROP, cap)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgroups():
        raise OSError("the privilege drop did not hold")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    prctl(PR_SET_DUMPABLE, 1)


def close_all_but(keep: Iterable[int]) -> None:
    """Close every file descriptor but ``keep``."""
    low = 0
    for fd in sorted(set(keep)):
        if fd > low:  # closerange(n, n) would close everything from n
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
