"""Reading listening sockets from /proc (tests/listening.py), on a fake /proc."""

import os

from tests.listening import decode_address, listeners, parse_proc_net

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 101 1 0 100 0 0 10 0
   1: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 102 1 0 100 0 0 10 0
   2: 0100007F:1F92 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 103 1 0 100 0 0 10 0
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F93 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 104 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F94 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 105 1 0 100 0 0 10 0
   2: 00000000000000000000000001000000:1F95 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 106 1 0 100 0 0 10 0
"""
UDP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
   0: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 107 2 0 0
   1: 0100007F:A000 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 108 2 0 0
"""


def test_addresses_are_decoded_as_the_kernel_writes_them():
    assert decode_address("0100007F:1F90") == ("127.0.0.1", 8080)
    assert decode_address("00000000:1F91") == ("0.0.0.0", 8081)
    assert decode_address("00000000000000000000000000000000:1F93") == ("::", 8083)
    assert decode_address("0000000000000000FFFF00000100007F:1F94") == ("127.0.0.1", 8084)  # v4-mapped
    assert decode_address("00000000000000000000000001000000:1F95") == ("::1", 8085)


def test_only_listening_sockets_are_kept():
    assert parse_proc_net(TCP, "tcp") == {101: ("tcp", "127.0.0.1", 8080), 102: ("tcp", "0.0.0.0", 8081)}
    assert parse_proc_net(TCP6, "tcp6") == {
        104: ("tcp", "::", 8083),
        105: ("tcp", "127.0.0.1", 8084),
        106: ("tcp", "::1", 8085),
    }
    assert parse_proc_net(UDP, "udp") == {107: ("udp", "0.0.0.0", 5353)}  # a connected client is not listed


def test_sockets_of_every_process_in_the_group_are_found(tmp_path):
    proc = tmp_path
    (proc / "net").mkdir()
    (proc / "net" / "tcp").write_text(TCP)
    (proc / "net" / "tcp6").write_text(TCP6)
    (proc / "net" / "udp").write_text(UDP)
    # pid 10 leads group 10; 11 is its child (a worker); 12 is another group; 13 a zombie of group 10
    for pid, state, pgid, inodes in (
        (10, "S", 10, [101]),
        (11, "S", 10, [104, 999]),
        (12, "S", 12, [102]),
        (13, "Z", 10, [106]),
    ):
        d = proc / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "stat").write_text(f"{pid} (java) {state} 1 {pgid} {pgid} 0 -1 0")
        (d / "comm").write_text("java\n")
        for n, inode in enumerate(inodes):
            os.symlink(f"socket:[{inode}]", d / "fd" / str(n))
    found = listeners({"trino": 10}, proc)
    assert [(s.service, s.address, s.port, s.pid) for s in found] == [
        ("trino", "127.0.0.1", 8080, 10),
        ("trino", "::", 8083, 11),
    ]
