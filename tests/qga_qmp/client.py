"""An independent QGA client against guestd: Python qemu.qmp (PyPI), as management tools use it.

Usage: client.py SOCKET SCRATCH_DIR. Prints one "OK <check>" line per passed check and exits 0;
any failure raises (non-zero exit with a traceback). Every call has a timeout, so a reply
that never comes (for example an id that is not echoed: qemu.qmp routes replies by id) fails
instead of hanging.
"""

import asyncio
import base64
import os
import sys
import time

from qemu.qmp import ExecuteError, QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

SOCK, SCRATCH = sys.argv[1], sys.argv[2]


def ok(what):
    print("OK", what, flush=True)


def legacy():
    q = QEMUMonitorProtocol(SOCK)
    q.settimeout(10)
    assert q.connect(negotiate=False) is None
    assert q.cmd("guest-sync", id=1732370000123) == 1732370000123
    assert q.cmd("guest-ping") == {}
    info = q.cmd("guest-info")
    names = {c["name"] for c in info["supported_commands"]}
    assert "guest-exec" in names and len(names) == 44, sorted(names)
    assert isinstance(info["version"], str)
    ok("legacy sync, ping, info")

    raw = q.cmd_raw("guest-nonexistent")
    assert raw == {"error": {"class": "CommandNotFound",
                             "desc": "The command guest-nonexistent has not been found"}}, raw
    try:
        q.cmd("guest-sync", id="x")
        raise AssertionError("no error for a bad argument")
    except ExecuteError as e:
        assert e.error_class == "GenericError", e.error_class
        assert "expected: integer" in str(e), str(e)
    ok("legacy errors")

    osinfo = q.cmd("guest-get-osinfo")
    assert osinfo.get("kernel-release") == os.uname().release, osinfo
    host = q.cmd("guest-get-host-name")["host-name"]
    assert host == os.uname().nodename, host
    ok("legacy osinfo and host name")

    path = os.path.join(SCRATCH, "qmp.bin")
    data = os.urandom(100000) + b"end"
    h = q.cmd("guest-file-open", path=path, mode="w+")
    w = q.cmd("guest-file-write", handle=h, **{"buf-b64": base64.b64encode(data).decode()})
    assert w == {"count": len(data), "eof": False}, w
    assert q.cmd("guest-file-seek", handle=h, offset=0, whence="set")["position"] == 0
    got = b""
    while True:
        r = q.cmd("guest-file-read", handle=h, count=65536)
        got += base64.b64decode(r["buf-b64"])
        if r["eof"]:
            break
    assert got == data
    assert q.cmd("guest-file-close", handle=h) == {}
    with open(path, "rb") as f:
        assert f.read() == data
    ok("legacy file round trip")

    pid = q.cmd("guest-exec", path="sh", arg=["-c", "printf qmp; exit 4"],
                **{"capture-output": True})["pid"]
    deadline = time.time() + 10
    while True:
        st = q.cmd("guest-exec-status", pid=pid)
        if st["exited"] or time.time() > deadline:
            break
        time.sleep(0.02)
    assert st["exitcode"] == 4 and base64.b64decode(st["out-data"]) == b"qmp", st
    ok("legacy exec")
    q.close()


async def client(name):
    c = QMPClient(name)
    c.await_greeting = False
    c.negotiate = False
    await asyncio.wait_for(c.connect(SOCK), 10)
    return c


async def modern():
    a = await client("a")
    b = await client("b")
    # Both connected at once, each with its own session: interleaved requests are answered
    # on the right connection, ids echoed (qemu.qmp routes by id).
    ra, rb = await asyncio.wait_for(asyncio.gather(
        a.execute("guest-sync", {"id": 1}),
        b.execute("guest-sync", {"id": 2}),
    ), 10)
    assert (ra, rb) == (1, 2), (ra, rb)
    results = await asyncio.wait_for(asyncio.gather(
        *[a.execute("guest-sync", {"id": i}) for i in range(50)],
        *[b.execute("guest-sync", {"id": 100 + i}) for i in range(50)],
    ), 20)
    assert results == list(range(50)) + list(range(100, 150)), results
    ok("two clients at once")

    host = await asyncio.wait_for(a.execute("guest-get-host-name"), 10)
    assert host["host-name"] == os.uname().nodename, host
    try:
        await asyncio.wait_for(b.execute("guest-get-devices"), 10)
        raise AssertionError("guest-get-devices answered on Linux")
    except ExecuteError as e:
        assert e.error_class == "CommandNotFound", e.error_class
        assert str(e) == "Command guest-get-devices has been disabled", str(e)
    ok("async execute and errors")

    await a.disconnect()
    # The other client keeps its session.
    assert await asyncio.wait_for(b.execute("guest-ping"), 10) == {}
    await b.disconnect()
    ok("one client leaving does not disturb the other")


legacy()
asyncio.run(modern())
