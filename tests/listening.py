"""Which sockets the stack's processes listen on, read from /proc (Linux), for the exposure test.

A service runs in its own process group (ops.stack.process), so its processes are those whose
group is its recorded pid: gunicorn's workers and Spark's JVM included. A socket belongs to a
process when one of its /proc/<pid>/fd links is `socket:[inode]`; /proc/net/{tcp,tcp6,udp,udp6}
give each inode's local address and state.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

TCP_LISTEN = "0A"
UDP_UNCONNECTED = "07"  # what `ss -lu` lists: a bound UDP socket with no peer


@dataclass(frozen=True, order=True)
class Listener:
    service: str
    proto: str
    address: str  # IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are shown as a.b.c.d
    port: int
    pid: int
    command: str

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.service:9} {self.proto:4} {host}:{self.port}  pid {self.pid} ({self.command})"


def decode_address(hex_address: str) -> tuple[str, int]:
    """'0100007F:1F90' -> ('127.0.0.1', 8080); IPv6 is four little-endian 32-bit words."""
    host_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        address = ipaddress.IPv4Address(raw[::-1])
    else:
        address = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
    return str(address), int(port_hex, 16)


def parse_proc_net(text: str, proto: str) -> dict[int, tuple[str, str, int]]:
    """inode -> (proto, address, port) of the listening sockets in a /proc/net/<proto> table."""
    wanted = TCP_LISTEN if proto.startswith("tcp") else UDP_UNCONNECTED
    out = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != wanted:
            continue
        if proto.startswith("udp") and decode_address(fields[2])[1] != 0:
            continue  # connected UDP: a client, not a listener
        address, port = decode_address(fields[1])
        out[int(fields[9])] = (proto.rstrip("6") if proto.endswith("6") else proto, address, port)
    return out


def listening_inodes(proc: Path = Path("/proc")) -> dict[int, tuple[str, str, int]]:
    table: dict[int, tuple[str, str, int]] = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            table.update(parse_proc_net((proc / "net" / proto).read_text(), proto))
        except OSError:
            pass
    return table


def group_members(pgid: int, proc: Path = Path("/proc")) -> list[int]:
    """Live processes of process group ``pgid``."""
    members = []
    for entry in proc.glob("[0-9]*"):
        try:
            state_and_rest = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(state_and_rest[2]) == pgid and state_and_rest[0] != "Z":
            members.append(int(entry.name))
    return sorted(members)


def socket_inodes(pid: int, proc: Path = Path("/proc")) -> set[int]:
    inodes = set()
    try:
        fds = list((proc / str(pid) / "fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def command_of(pid: int, proc: Path = Path("/proc")) -> str:
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def listeners(groups: dict[str, int], proc: Path = Path("/proc")) -> list[Listener]:
    """Every listening socket of every process in each service's process group."""
    table = listening_inodes(proc)
    found = set()
    for service, pgid in groups.items():
        for pid in group_members(pgid, proc):
            for inode in socket_inodes(pid, proc) & table.keys():
                proto, address, port = table[inode]
                found.add(Listener(service, proto, address, port, pid, command_of(pid, proc)))
    return sorted(found)
