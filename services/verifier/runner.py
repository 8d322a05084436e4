"""In-sandbox test runner: one sandbox per task, a fresh forked process per test. Standard library only.

The host starts it (inside bubblewrap) as `python3 -I -c <this file>`. On stdin come trusted frames
from the host (4-byte length, then marshal data): a header {lang, source, entry, limits, work,
sandboxed, cxx}, then one frame per test {stdin, args}; EOF ends the session. Each reply on stdout
is a JSON line whose `out`/`err` give the byte lengths of the stdout and stderr tail that follow.
Startup imports stay with cheap modules (json, shutil and traceback would cost ~10 ms per task).

Expected outputs never enter the sandbox: the host compares. Before every test the runner kills
every other process in the sandbox and wipes the writable directories, so nothing one test leaves
behind reaches the next. The runner is pid 1 of the sandbox (bwrap --as-pid-1): tests cannot
signal it, and it reaps what they orphan.
"""

import builtins
import contextlib
import gc
import io
import marshal
import os
import resource
import select
import signal
import sys
import time
import types

ERR_TAIL = 4096  # bytes of stderr sent back
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _json(value):
    """JSON for the reply's numbers, booleans, None and plain ASCII names (no json import)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        return repr(value)
    return f'"{value}"'


def reply(meta, out=b"", err=b""):
    meta["out"], meta["err"] = len(out), len(err)
    line = "{" + ", ".join(f'"{k}": {_json(v)}' for k, v in meta.items()) + "}\n"
    sys.stdout.buffer.write(line.encode() + out + err)
    sys.stdout.buffer.flush()


def receive():
    """The next frame from the host, or None at EOF."""
    size = sys.stdin.buffer.read(4)
    if len(size) < 4:
        return None
    return marshal.loads(sys.stdin.buffer.read(int.from_bytes(size, "big")))


def make_undumpable():
    """PR_SET_DUMPABLE 0: tests (same uid) cannot ptrace the runner or open its /proc files."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except Exception:
        pass


def set_limits(lim):
    cpu = int(lim["cpu_s"])
    limits = [
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, lim["memory"], lim["memory"]),
        (resource.RLIMIT_NPROC, lim["nproc"], lim["nproc"]),
        (resource.RLIMIT_FSIZE, lim["fsize"], lim["fsize"]),
        (resource.RLIMIT_NOFILE, lim["nofile"], lim["nofile"]),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_STACK, lim["stack"], lim["stack"]),
    ]
    for what, soft, hard in limits:
        resource.setrlimit(what, (soft, hard))


def reap():
    """Collect every exited child (the runner is pid 1 of the sandbox: orphans become its children)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def sweep():
    """Kill every process in this pid namespace except the runner (pid 1 with bwrap --as-pid-1)."""
    me = os.getpid()
    for _ in range(200):
        victims = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) in (1, me):
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in ("Z", "X"):
                victims.append(int(name))
        if not victims:
            reap()
            return
        for pid in victims:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.0005)


def _enter(name):
    """chdir into the real directory `name` (never through a symlink), made searchable first."""
    with contextlib.suppress(OSError):
        os.chmod(name, 0o700)
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchdir(fd)
    finally:
        os.close(fd)


def _clear_here(stuck):
    """Unlink every non-directory in the current directory; return a subdirectory not in `stuck`, or None."""
    sub = None
    with os.scandir(".") as entries:
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.name)
            elif sub is None and entry.name not in stuck:
                sub = entry.name
    return sub


def _empty_tree():
    """Empty the current directory, however deep: a loop (no recursion), one name per syscall (no PATH_MAX)."""
    levels: list[tuple[str, set[str]]] = [
        ("", set())
    ]  # (name of this level in its parent, subdirectories that could not be removed)
    while levels:
        sub = _clear_here(levels[-1][1])
        if sub is not None:
            try:
                _enter(sub)
            except OSError:
                levels[-1][1].add(sub)
            else:
                levels.append((sub, set()))
            continue
        name, _ = levels.pop()
        if levels:
            os.chdir("..")
            try:
                os.rmdir(name)
            except OSError:
                levels[-1][1].add(name)


def _force_remove(path):
    """Remove a file or a whole tree, whatever its depth or the permissions a test set on it."""
    with contextlib.suppress(OSError):
        if not os.path.isdir(path) or os.path.islink(path):
            os.unlink(path)
            return
        home = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            _enter(path)
            _empty_tree()
        finally:
            os.fchdir(home)
            os.close(home)
        os.rmdir(path)


def reset_dirs(header):
    """A fresh, empty work directory; in the sandbox, every writable directory emptied."""
    if header["sandboxed"]:
        for base in ("/tmp", "/dev/shm"):
            try:
                names = os.listdir(base)
            except OSError:
                continue
            for name in names:
                _force_remove(os.path.join(base, name))
    else:
        _force_remove(header["work"])
    os.makedirs(header["work"], exist_ok=True)


def run_python(source, args_json, entry):
    """Run the solution in this (forked) process as a fresh __main__; never returns."""
    code = 0
    result_fd = None
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "rb", closefd=False)), encoding="utf-8")
    if args_json is not None:
        result_fd = os.dup(1)
        os.dup2(2, 1)  # prints during a function-call test go to stderr
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "wb", closefd=False)), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "wb", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    sys.argv = ["sol.py"]
    module = types.ModuleType("__main__" if args_json is None else "solution")
    module.__file__ = "sol.py"
    module.__dict__["__builtins__"] = builtins
    sys.modules[module.__name__] = module
    try:
        exec(compile(source, "sol.py", "exec"), module.__dict__)
        if args_json is not None:
            import json  # preloaded by the runner when the task has an entry point

            args = json.loads(args_json)
            fn = module.__dict__.get(entry)
            if fn is None and isinstance(module.__dict__.get("Solution"), type):
                fn = getattr(module.__dict__["Solution"](), entry, None)
            if not callable(fn):
                raise NameError(f"entry point {entry!r} is not defined")
            value = fn(*args) if isinstance(args, list) else fn(args)
            os.write(result_fd or 1, json.dumps(value).encode())
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException as e:
        code = 1
        try:  # the solution's frames only, as `python3 sol.py` would print them
            import traceback

            traceback.print_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None)
        except BaseException:
            os.write(2, b"\nMemoryError (while printing the traceback)\n")
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        code = code or 1
    os._exit(code)


def child(header, test, stdin_fd, out_w, err_w, argv):
    """The forked test process: own session, rlimits, stdio; then the program. Never returns."""
    try:
        os.setsid()
        os.dup2(stdin_fd, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.closerange(3, 65536)
        os.chdir(header["work"])
        with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # if memory runs out, untrusted code is the first to go
        set_limits(test.get("limits") or header["limits"])
        if argv is not None:
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            os.execve(argv[0], argv, ENV)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
        run_python(header["source"], test.get("args"), header.get("entry", ""))
    except BaseException as e:
        os.write(2, f"runner: could not start the program: {e!r}\n".encode())
    os._exit(126)


def collect(pid, out_r, err_r, wall_s, cap):
    """Read the child's output until it exits (and its pipes close), the wall limit, or the output cap."""
    start = time.monotonic()
    deadline = start + wall_s
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    for fd in (out_r, err_r, pidfd):
        poller.register(fd, select.POLLIN)
    bufs = {out_r: bytearray(), err_r: bytearray()}
    live = {out_r, err_r}
    exited_at = None
    timed_out = over = False
    while live and not over:
        now = time.monotonic()
        if now >= deadline:
            timed_out = exited_at is None
            break
        if exited_at is not None and now - exited_at > 0.2:
            break  # something the program started still holds its pipes
        for fd, _ in poller.poll(max(1, int((deadline - now) * 1000)) if exited_at is None else 50):
            if fd == pidfd:
                exited_at = time.monotonic()
                poller.unregister(pidfd)
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                poller.unregister(fd)
                live.discard(fd)
                continue
            bufs[fd] += chunk
            if len(bufs[fd]) > cap:
                over = True
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    reap()
    wall = (exited_at or time.monotonic()) - start
    os.close(pidfd)
    return status, usage, bytes(bufs[out_r][:cap]), bytes(bufs[err_r][-ERR_TAIL:]), wall, timed_out, over


def run_one(header, test, argv, lim, binary=None, fresh=True):
    """Run one test in a fresh child; return (meta, stdout, stderr tail)."""
    if fresh:
        reset_dirs(header)
    if binary is not None:
        fd = os.open(argv[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o755)
        os.write(fd, binary)
        os.close(fd)
    stdin_fd = os.memfd_create("stdin")
    os.write(stdin_fd, test.get("stdin", "").encode())
    os.lseek(stdin_fd, 0, os.SEEK_SET)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        child(header, test, stdin_fd, out_w, err_w, argv)
    for fd in (stdin_fd, out_w, err_w):
        os.close(fd)
    status, usage, out, err, wall, timed_out, over = collect(pid, out_r, err_r, lim["wall_s"], lim["output"])
    os.close(out_r)
    os.close(err_r)
    if header["sandboxed"]:
        sweep()
    meta = {
        "kind": "test",
        "exit": os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "wall_s": wall,
        "timeout": timed_out,
        "olimit": over,
    }
    return meta, out, err


def compile_cpp(header):
    """g++ the source once, under the compile limits; return (ok, detail, binary bytes)."""
    reset_dirs(header)
    build = os.path.join(header["work"], "build")
    os.makedirs(build)
    with open(os.path.join(build, "sol.cpp"), "w") as f:
        f.write(header["source"])
    argv = [
        header["cxx"],
        "-O2",
        "-std=c++17",
        "-pipe",
        "-o",
        os.path.join(build, "sol"),
        os.path.join(build, "sol.cpp"),
    ]
    lim = header["compile_limits"]
    meta, _, err = run_one({**header, "work": build}, {"limits": lim}, argv, lim, fresh=False)
    if meta["exit"] != 0:
        why = "timed out" if meta["timeout"] else f"exit {meta['exit']}, signal {meta['signal']}"
        return False, f"{why}: {err.decode('utf-8', 'replace')[-1500:]}".encode(), b""
    with open(os.path.join(build, "sol"), "rb") as f:
        return True, b"", f.read()


def main():
    # As pid 1 of the sandbox, signals from tests are ignored unless handled: keep it that way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    header = receive()
    if header["sandboxed"]:
        make_undumpable()
    if header.get("entry"):
        import json  # noqa: F401  (function-call tests: loaded once here, not in every test)
    binary = argv = None
    if header["lang"] == "cpp":
        ok, detail, binary = compile_cpp(header)
        reply({"kind": "compile", "ok": ok}, err=detail)
        if not ok:
            return
        argv = [os.path.join(header["work"], "sol")]
    else:
        reply({"kind": "ready"})
    gc.freeze()  # the runner's objects: a forked test need not copy pages just to scan them
    while (test := receive()) is not None:
        meta, out, err = run_one(header, test, argv, test.get("limits") or header["limits"], binary)
        reply(meta, out, err)


if __name__ == "__main__":
    main()
