"""Start the book build's notebook kernels by forking one that has imported torch.

    python scripts/fork_kernels.py serve SOCKET [DIR [MODULES]]  (by build_book.py)
    python scripts/fork_kernels.py launch SOCKET -f CONNECTION_FILE
                                                     (a kernel spec's argv)

Every chapter's kernel imports torch, numpy and matplotlib before its first
cell does any work: about 3 s of CPU per kernel on a two-core CPU, 13 times
per build, the largest single cost of ``make book`` after the experiments.
The server imports them once (with ipykernel) and forks a fresh process for
each kernel the build starts, so every notebook still runs every cell afresh
in its own process; only the imports are shared, copy-on-write. This is
``multiprocessing``'s forkserver with preloaded modules, for Jupyter kernels.

``launch`` is what Jupyter starts as "the kernel": a small process that
hands its connection file, working directory, environment and standard
streams to the server, forwards every signal Jupyter sends (interrupt,
terminate) to the forked kernel, and exits when the kernel does. If it dies,
the kernel notices (their socket closes) and exits too. When the server is
not there, refuses (the kernel's environment differs from the server's in
more than Jupyter's per-kernel variables, so a preloaded module may have read
another value at import), or anything else goes wrong, ``launch`` becomes an
ordinary ``ipykernel`` kernel, so a build never depends on the server.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
from typing import Sequence

#: Variables Jupyter sets for each kernel it starts. Any other difference
#: between a kernel's environment and the server's (a variable a preloaded
#: module may have read at import) makes the launcher start an ordinary kernel.
PER_KERNEL_PREFIXES = ("JPY_", "IPY_")
#: Signals Jupyter may send a kernel (interrupt, shutdown, kill request).
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2)
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
#: The server's pid: a forked kernel leaving :func:`serve` must not clean up.
_SERVER_PID = os.getpid()


def _shared_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the per-kernel variables, with ipykernel's matplotlib default."""
    shared = {k: v for k, v in env.items() if not k.startswith(PER_KERNEL_PREFIXES)}
    if not shared.get("MPLBACKEND"):
        shared["MPLBACKEND"] = INLINE_BACKEND
    return shared


def _log(message: str) -> None:
    """Append to the file named by ``GF_FORK_KERNELS_LOG`` (for debugging), if set."""
    where = os.environ.get("GF_FORK_KERNELS_LOG")
    if where:
        with open(where, "a", encoding="utf-8") as log:
            log.write(f"{os.getpid()} {message}\n")


def _read_line(conn: socket.socket, data: bytes = b"") -> bytes:
    """``data`` and what follows on ``conn`` up to a newline (or the end)."""
    while not data.endswith(b"\n"):
        more = conn.recv(1 << 16)
        if not more:
            break
        data += more
    return data


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _run_kernel(conn: socket.socket, request: dict, fds: list[int]) -> int:
    """In the forked child: run the kernel; its exit code (any failure exits at once)."""
    try:
        _become_kernel(conn, request, fds)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except BaseException:  # noqa: BLE001 - never fall back into the server's loop
        os._exit(1)
    return 0


def _become_kernel(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """Take the launcher's streams, place and environment; run ipykernel until it exits."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
        os.close(fd)
    fds.clear()  # now the kernel's 0, 1, 2: not the server's to close
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.setsid()
    conn.sendall(f"{os.getpid()}\n".encode())

    import threading

    server = os.getppid()

    def exit_with_launcher_or_server() -> None:
        # The launcher never writes again: EOF means it has gone (even by
        # SIGKILL). A new parent means the server has gone, with the build.
        conn.settimeout(1.0)
        while os.getppid() == server:
            try:
                if not conn.recv(1):
                    break
            except TimeoutError:
                continue
            except OSError:  # closed here, as the kernel exits
                return
        os._exit(1)

    threading.Thread(target=exit_with_launcher_or_server, name="launcher-watch",
                     daemon=True).start()
    # as ipykernel_launcher does: no script directory on sys.path (IPython adds cwd back)
    sys.path[:] = [p for p in sys.path if p != os.path.dirname(os.path.abspath(__file__))]
    argv = list(request["argv"])
    # ipykernel reads JPY_PARENT_PID when it is imported, here before the request came
    if request["env"].get("JPY_PARENT_PID", "").isdigit():
        argv.append(f"--IPKernelApp.parent_handle={request['env']['JPY_PARENT_PID']}")
    sys.argv = ["ipykernel_launcher", *argv]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance(argv=argv)


def serve(path: str, cleanup: str | None = None, preload: Sequence[str] = ()) -> int:
    """Bind first (launchers wait in the backlog), preload, then fork a kernel per request.

    Runs until its standard input closes; then removes ``cleanup`` (the
    directory holding the socket and the kernel spec), if given.
    """
    try:
        return _serve(path, preload)
    finally:
        if cleanup and os.getpid() == _SERVER_PID:
            import shutil

            shutil.rmtree(cleanup, ignore_errors=True)


#: What every chapter's kernel imports, loaded before the server serves.
CORE = ("numpy", "torch", "matplotlib", "matplotlib.pyplot", "ipykernel.kernelapp")


def _preload_core() -> None:
    import importlib

    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)  # what the kernel would set
    for name in CORE:
        importlib.import_module(name)
    # matplotlib builds its mathtext grammar on first use in each process
    # (0.2 s) and keeps it on the class: build it once here
    from matplotlib import mathtext

    mathtext.MathTextParser("path").parse("$x$")


def _import(name: str) -> None:
    """Import ``a.b``, or for ``a:b`` (``from a import b``) ``a`` and, if a submodule, ``a.b``.

    A module that fails to import is left to the kernel, which then fails
    (or not) as it would have without the server.
    """
    import importlib
    import importlib.util

    package, _, member = name.partition(":")
    try:
        module = importlib.import_module(package)
        # only a package has submodules (find_spec raises on a module's names)
        if (member and hasattr(module, "__path__")
                and importlib.util.find_spec(f"{package}.{member}") is not None):
            importlib.import_module(f"{package}.{member}")
    except Exception as exc:  # noqa: BLE001 - the kernel meets it again, as without the server
        _log(f"not preloaded: {name} ({type(exc).__name__})")
    else:
        _log(f"preloaded {name}")


def _serve(path: str, preload: Sequence[str]) -> int:
    # Ctrl-C in the terminal reaches the whole build: the server ends with the
    # build (its input closes), not with a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)  # fails e.g. when the path is too long for a socket
        listener.listen(64)
    except OSError as exc:
        print(f"fork_kernels: cannot listen on {path} ({exc}); kernels start as usual",
              file=sys.stderr)
        return 1
    server_env = _shared_env(dict(os.environ))
    _preload_core()
    # Forking a process with a second (native) thread can deadlock the child.
    usable = _threads() == 1
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the system reaps exited kernels
    import select

    # The notebooks' own imports are loaded one at a time whenever no kernel
    # is asked for, so the first kernels do not wait for them (a kernel forked
    # before one is loaded imports it itself).
    pending = list(preload)
    while True:
        idle = 0 if pending and usable else None
        ready, _, _ = select.select([listener, sys.stdin], [], [], idle)
        if not ready:
            _import(pending.pop(0))
            usable = _threads() == 1
            continue
        if sys.stdin in ready and not sys.stdin.buffer.read1(1 << 16):
            return 0  # the build has exited
        if listener not in ready:
            continue
        conn, _ = listener.accept()
        fds: list[int] = []
        try:
            msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            request = json.loads(_read_line(conn, msg))
            differs = sorted(set(_shared_env(request["env"]).items()) ^ set(server_env.items()))
            if not usable or differs or len(fds) != 3:
                _log(f"refused: threads={_threads()} fds={len(fds)} env differs in "
                     f"{sorted({k for k, _ in differs})}")
                conn.sendall(b"no\n")
                continue
            _log(f"forking a kernel for {request['cwd']}")
            if os.fork() == 0:
                listener.close()
                return _run_kernel(conn, request, fds)  # the child leaves the loop
        except (OSError, ValueError, KeyError):
            pass
        finally:
            conn.close()
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass


def _ordinary_kernel(argv: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", *argv])


def launch(path: str, argv: list[str]) -> int:
    """Ask the server for a kernel; forward signals to it until it exits."""
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        pid = int(_read_line(conn))  # "no" or a broken reply: ValueError
    except (OSError, ValueError):
        _ordinary_kernel(argv)
        return 1  # not reached

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED:
        signal.signal(signum, forward)
    while True:
        try:
            if not conn.recv(1):
                return 0
        except InterruptedError:
            continue
        except OSError:
            return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "serve":
        cleanup = argv[2] if len(argv) > 2 else None
        preload = [m for m in argv[3].split(",") if m] if len(argv) > 3 else []
        return serve(argv[1], cleanup, preload)
    if len(argv) >= 2 and argv[0] == "launch":
        return launch(argv[1], argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
