"""The sandbox self-test run at startup: the service refuses to serve code if isolation does not hold."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile

from services.verifier.sandbox import SANDBOX_UID, Limits, Sandbox, SandboxError

# Runs inside the sandbox as an ordinary test program; prints what it could do that it should not.
_PROBE = r"""
import json, os, socket, sys
req = json.loads(sys.stdin.read())
found = {"uid": os.getuid()}
try:
    socket.create_connection(("127.0.0.1", req["port"]), timeout=1).close()
    found["network"] = "connected to a port on the host's loopback"
except OSError:
    pass
names = [n for _, n in socket.if_nameindex()]
if names != ["lo"]:
    found["interfaces"] = names
for path in ("/usr/.mimo-probe", "/.mimo-probe", "/etc/.mimo-probe", "/proc/.mimo-probe"):
    try:
        open(path, "w").close()
        found["writable " + path] = True
    except OSError:
        pass
for path, dev, ino in req["hidden"]:
    try:
        st = os.stat(path)
    except OSError:
        continue
    if (st.st_dev, st.st_ino) == (dev, ino):
        found["visible " + path] = True
pids = [p for p in os.listdir("/proc") if p.isdigit()]
if len(pids) > 8:
    found["processes visible"] = len(pids)
with open("probe.txt", "w") as f:
    f.write("the work directory is writable")
print(json.dumps(found))
"""


def _host_files(paths: list[str]) -> list[tuple[str, int, int]]:
    """(path, st_dev, st_ino) of each host path that exists: the probe reports one only if the sandbox sees
    that same file. A name alone proves nothing: the host's working directory may be /tmp, and the
    sandbox has a /tmp of its own (a fresh tmpfs), which is not the host's."""
    found = []
    for path in paths:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            found.append((path, st.st_dev, st.st_ino))
    return found


def _uids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    return []


async def self_test(sandbox: Sandbox) -> list[str]:
    """Problems found with the sandbox's isolation ([] when it holds)."""
    config = sandbox.config
    if not config.is_isolated:
        return []
    if shutil.which(config.bwrap) is None:
        return [f"{config.bwrap} not found: install bubblewrap (apt-get install bubblewrap)"]
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return ["setpriv not found (util-linux): needed to drop from root to the sandbox uid"]
    connections: list[str] = []

    def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append("connected")
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    canary_dir = tempfile.mkdtemp(prefix="mimo-selftest-")
    canary = os.path.join(canary_dir, "canary")
    with open(canary, "w") as f:
        f.write("a host file the sandbox must not see")
    hidden = [canary, canary_dir, "/work", "/root", "/home", "/etc/passwd", "/etc/shadow", "/var", os.getcwd()]
    problems: list[str] = []
    try:
        async with sandbox.session("python", _PROBE, "", Limits(time_limit_s=5.0)) as session:
            if session.pid is not None:
                host_uids = _uids(session.pid)
                if any(u != SANDBOX_UID for u in host_uids):
                    problems.append(f"the sandbox runs as host uid {host_uids}, not {SANDBOX_UID}")
            request = {"port": port, "hidden": _host_files([p for p in hidden if p != "/"])}
            outcome = await session.run(json.dumps(request))
    except SandboxError as e:
        problems.append(f"the sandbox does not start: {e}")
        outcome = None
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
        shutil.rmtree(canary_dir, ignore_errors=True)
    if outcome is not None:
        problems += _judge_probe(outcome.exit_code, outcome.stdout, outcome.stderr, outcome.error)
    if connections:
        problems.append("a connection from the sandbox reached the host's loopback")
    return problems


def _judge_probe(exit_code: int | None, stdout: bytes, stderr: str, error: str) -> list[str]:
    if error or exit_code != 0:
        return [f"the probe program failed in the sandbox: {error or stderr.strip()[-300:]}"]
    try:
        found = json.loads(stdout)
    except ValueError:
        return [f"the probe program printed no report: {stdout[:200]!r}"]
    problems = []
    if found.pop("uid") != SANDBOX_UID:
        problems.append(f"programs do not run as uid {SANDBOX_UID}")
    problems += [f"{key}: {value}" for key, value in found.items()]
    return problems
