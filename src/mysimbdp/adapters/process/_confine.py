"""Kernel confinement of one process, through raw system calls (Linux; private to ``sandbox``).

Three mechanisms, each from the kernel's own interface, no dependency:

* **Landlock** (``landlock_create_ruleset``/``add_rule``/``restrict_self``): which files and
  directories the process may read, write or execute, which TCP ports it may connect to or
  bind (ABI 4+), and scoping (ABI 6+): no signals to processes outside its domain, no
  abstract unix sockets outside it. Landlock also refuses ``ptrace`` of, and so the
  ``/proc/<pid>/environ``, ``mem`` … of, any process outside the domain.
* **seccomp** (a small BPF filter): ``socket()`` only for TCP over IPv4/IPv6. Landlock has no
  rule yet for UDP, raw sockets or connecting to a *named* unix socket (PostgreSQL's
  ``/var/run/postgresql/.s.PGSQL.5432`` with local trust would be a superuser door); the
  filter closes them. ``socketpair`` (asyncio's self-pipe) stays allowed: it reaches nothing.
* **capabilities**: all dropped (bounding set, ambient, effective, permitted, inheritable),
  with ``SECBIT_NOROOT`` locked and ``no_new_privs`` set, so an app started by root has
  none of root's powers beyond owning files (which Landlock then fences).

The ruleset is built in the parent (:func:`build_ruleset` opens each granted path), and the
child only makes system calls between ``fork`` and ``exec`` (:func:`confine_self`).
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FS_EXEC",
    "FS_READ",
    "FS_WRITE",
    "Confinement",
    "build_ruleset",
    "confine_self",
    "landlock_abi",
    "seccomp_filter",
]

_SYSCALLS = {  # landlock_create_ruleset, landlock_add_rule, landlock_restrict_self, socket; audit arch
    "x86_64": (444, 445, 446, 41, 0xC000003E),
    "aarch64": (444, 445, 446, 198, 0xC00000B7),
}

# Landlock access rights (<linux/landlock.h>)
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_REMOVE_DIR, _REMOVE_FILE, _MAKE_CHAR, _MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
_MAKE_REG, _MAKE_SOCK, _MAKE_FIFO, _MAKE_BLOCK, _MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3, 5
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV  # what a rule on a file may hold
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_CREATE_RULESET_VERSION = 1 << 0

FS_READ = _READ_FILE | _READ_DIR
FS_EXEC = FS_READ | _EXECUTE
FS_WRITE = FS_READ | _WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE_DIR | _MAKE_REG | _MAKE_SYM | _REFER | _TRUNCATE

# prctl and capabilities
_PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP, _PR_SET_SECUREBITS, _PR_CAP_AMBIENT = 38, 24, 28, 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_SECUREBITS_LOCKED_NOROOT = 0x2F  # NOROOT, NO_SETUID_FIXUP and KEEP_CAPS, each locked
_CAP_VERSION_3 = 0x20080522
_LAST_CAP = 63  # dropping an unknown capability fails with EINVAL, which is harmless

# seccomp BPF (<linux/filter.h>, <linux/seccomp.h>)
_LD_W_ABS, _JEQ_K, _AND_K, _RET_K, _JGE_K = 0x20, 0x15, 0x54, 0x06, 0x35
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_EACCES = 13
_AF_INET, _AF_INET6, _SOCK_STREAM, _SOCK_TYPE_MASK, _IPPROTO_TCP = 2, 10, 1, 0xF, 6
_X32_SYSCALL_BIT = 0x40000000


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _numbers() -> tuple[int, int, int, int, int] | None:
    if sys.platform != "linux":
        return None
    return _SYSCALLS.get(platform.machine())


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where there is none (not Linux, too old, disabled)."""
    numbers = _numbers()
    if numbers is None:
        return 0
    try:
        version = int(_libc().syscall(numbers[0], None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)))
    except (OSError, AttributeError):
        return 0
    return max(version, 0)


def _handled_fs(abi: int) -> int:
    rights = _EXECUTE | _WRITE_FILE | _READ_FILE | _READ_DIR | _REMOVE_DIR | _REMOVE_FILE
    rights |= _MAKE_CHAR | _MAKE_DIR | _MAKE_REG | _MAKE_SOCK | _MAKE_FIFO | _MAKE_BLOCK | _MAKE_SYM
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


@dataclass(frozen=True)
class Confinement:
    """A Landlock ruleset built in the parent, and the seccomp filter, for one child."""

    ruleset_fd: int
    seccomp: bytes | None  # the filter program; None: sockets are not filtered

    def close(self) -> None:
        os.close(self.ruleset_fd)


def build_ruleset(
    abi: int,
    paths: Iterable[tuple[str, int]],
    connect_ports: Iterable[int] | None,
) -> int:
    """A Landlock ruleset fd granting ``paths`` (path, rights) and TCP connect to
    ``connect_ports`` (``None``: the network is not restricted). Paths that do not exist are
    skipped. Raises ``OSError`` when the kernel refuses."""
    numbers = _numbers()
    assert numbers is not None and abi >= 1
    create, add, _, _, _ = numbers
    libc = _libc()
    handled_fs = _handled_fs(abi)
    restrict_net = connect_ports is not None and abi >= 4
    handled_net = (_NET_BIND_TCP | _NET_CONNECT_TCP) if restrict_net else 0
    scoped = (_SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL) if abi >= 6 else 0
    attr = struct.pack("=QQQ", handled_fs, handled_net, scoped)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    buf = ctypes.create_string_buffer(attr[:size], size)
    fd = int(libc.syscall(create, buf, ctypes.c_size_t(size), ctypes.c_uint32(0)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    try:
        for path, rights in paths:
            try:
                target = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                allowed = rights & handled_fs
                if not os.path.isdir(path):
                    allowed &= _FILE_RIGHTS
                rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, target), 12)
                if libc.syscall(add, ctypes.c_int(fd), ctypes.c_int(_RULE_PATH_BENEATH), rule, ctypes.c_uint32(0)):
                    err = ctypes.get_errno()
                    raise OSError(err, f"landlock_add_rule {path}: {os.strerror(err)}")
            finally:
                os.close(target)
        for port in list(connect_ports or ()) if restrict_net else []:
            rule = ctypes.create_string_buffer(struct.pack("=QQ", _NET_CONNECT_TCP, port), 16)
            if libc.syscall(add, ctypes.c_int(fd), ctypes.c_int(_RULE_NET_PORT), rule, ctypes.c_uint32(0)):
                err = ctypes.get_errno()
                raise OSError(err, f"landlock_add_rule port {port}: {os.strerror(err)}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def seccomp_filter() -> bytes | None:
    """A BPF program that lets ``socket()`` make only TCP sockets (IPv4, IPv6); every other
    socket family or type gets ``EACCES``. A foreign-ABI system call (x32, i386) is refused
    whole, so the filter cannot be stepped around. None where the architecture is unknown."""
    numbers = _numbers()
    if numbers is None:
        return None
    _, _, _, socket_nr, arch = numbers

    def op(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    deny = _RET_ERRNO | _EACCES
    program = [
        op(_LD_W_ABS, 0, 0, 4),  # 0: arch
        op(_JEQ_K, 1, 0, arch),  # 1
        op(_RET_K, 0, 0, deny),  # 2: a foreign ABI
        op(_LD_W_ABS, 0, 0, 0),  # 3: syscall number
        op(_JGE_K, 0, 1, _X32_SYSCALL_BIT),  # 4
        op(_RET_K, 0, 0, deny),  # 5: x32
        op(_JEQ_K, 1, 0, socket_nr),  # 6
        op(_RET_K, 0, 0, _RET_ALLOW),  # 7: not socket()
        op(_LD_W_ABS, 0, 0, 16),  # 8: family (args[0], low word)
        op(_JEQ_K, 1, 0, _AF_INET),  # 9
        op(_JEQ_K, 0, 6, _AF_INET6),  # 10 -> 17 deny
        op(_LD_W_ABS, 0, 0, 24),  # 11: type (args[1])
        op(_AND_K, 0, 0, _SOCK_TYPE_MASK),  # 12
        op(_JEQ_K, 0, 3, _SOCK_STREAM),  # 13 -> 17 deny
        op(_LD_W_ABS, 0, 0, 32),  # 14: protocol (args[2])
        op(_JEQ_K, 2, 0, 0),  # 15 -> 18 allow
        op(_JEQ_K, 1, 0, _IPPROTO_TCP),  # 16 -> 18 allow
        op(_RET_K, 0, 0, deny),  # 17
        op(_RET_K, 0, 0, _RET_ALLOW),  # 18
    ]
    return b"".join(program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def confine_self(confinement: Confinement) -> None:
    """In the child, between fork and exec: drop every capability, set ``no_new_privs``,
    install the socket filter, then enter the Landlock domain. Only system calls. Raises
    ``OSError`` (the child then fails to start, and the runner reports it) when a step the
    kernel offered is refused."""
    libc = _libc()
    prctl = libc.prctl
    prctl(_PR_SET_SECUREBITS, _SECUREBITS_LOCKED_NOROOT, 0, 0, 0)  # EPERM without CAP_SETPCAP: nothing to lock
    for cap in range(_LAST_CAP + 1):
        prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = struct.pack("=Ii", _CAP_VERSION_3, 0)
    data = bytes(24)  # two {effective, permitted, inheritable} words, all zero
    if libc.capset(ctypes.create_string_buffer(header, 8), ctypes.create_string_buffer(data, 24)):
        _fail("capset")
    if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0):
        _fail("prctl(PR_SET_NO_NEW_PRIVS)")
    if confinement.seccomp is not None:
        program = ctypes.create_string_buffer(confinement.seccomp, len(confinement.seccomp))
        fprog = _SockFprog(len(confinement.seccomp) // 8, ctypes.cast(program, ctypes.c_void_p))
        if prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0):
            _fail("seccomp")
    numbers = _numbers()
    assert numbers is not None
    if libc.syscall(numbers[2], ctypes.c_int(confinement.ruleset_fd), ctypes.c_uint32(0)):
        _fail("landlock_restrict_self")


def _fail(step: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"sandbox: {step}: {os.strerror(err)}")
