"""The build's forked kernels (scripts/fork_kernels.py): forked, or ordinary, never lost."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import build_book  # noqa: E402

jupyter_client = pytest.importorskip("jupyter_client")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the build forks kernels on Linux only")

SCRIPT = ROOT / "scripts" / "fork_kernels.py"
PRELOADED = "colorsys"  # a module nothing else here imports


def _write_spec(where: Path, sock: Path) -> None:
    spec = where / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, str(SCRIPT), "launch", str(sock), "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))


def _start_server(where: Path):
    """A server preloading PRELOADED, with this test's environment plus its JUPYTER_PATH."""
    sock = where / "server.sock"
    _write_spec(where, sock)
    # as the build's kernels: no MPLBACKEND (conftest sets Agg for the unit tests)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    log = where / "server.log"
    env.update(JUPYTER_PATH=str(where), OMP_NUM_THREADS="1", GF_FORK_KERNELS_LOG=str(log))
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "serve", str(sock), "", PRELOADED],
                            stdin=subprocess.PIPE, env=env)
    # the notebooks' imports load when the server is idle: wait for PRELOADED
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and f"preloaded {PRELOADED}" in log.read_text():
            break
        time.sleep(0.05)
    return proc, env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, env = _start_server(tmp_path_factory.mktemp("kernels"))
    yield proc, env
    proc.stdin.close()
    proc.wait(timeout=10)


def _kernel(env: dict[str, str]):
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3",
                                                         startup_timeout=60)
    finally:
        os.environ.clear()
        os.environ.update(old)
    return km, kc


def _run(kc, code: str, timeout: float = 30) -> tuple[str, dict]:
    out: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    reply = kc.execute_interactive(code, output_hook=hook, timeout=timeout)
    return "".join(out), reply["content"]


PROBE = "import os, sys; print(os.getppid(), os.getpid(), %r in sys.modules, os.getcwd())"


def _probe(kc) -> tuple[int, int, bool]:
    text, _ = _run(kc, PROBE % PRELOADED)
    ppid, pid, preloaded, _cwd = text.split()
    return int(ppid), int(pid), preloaded == "True"


def test_kernel_is_forked_from_the_preloaded_server(server, tmp_path):
    proc, env = server
    os.chdir(tmp_path)
    km, kc = _kernel(env)
    try:
        ppid, _, preloaded = _probe(kc)
        assert ppid == proc.pid and preloaded
        text, _ = _run(kc, "import os; print(os.getcwd())")
        assert Path(text.strip()) == tmp_path  # the launcher's working directory
        # figures still go through the inline backend
        data = []
        kc.execute_interactive("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()",
                               output_hook=lambda m: data.append(m["content"].get("data", {})),
                               timeout=60)
        assert any("image/png" in d for d in data)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
        os.chdir(ROOT)


def test_a_different_environment_gets_an_ordinary_kernel(server):
    proc, env = server
    km, kc = _kernel({**env, "GF_TEST_ONLY_VARIABLE": "1"})
    try:
        ppid, _, preloaded = _probe(kc)
        assert ppid != proc.pid and not preloaded
        text, _ = _run(kc, "import os; print(os.environ['GF_TEST_ONLY_VARIABLE'])")
        assert text.strip() == "1"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_no_server_gets_an_ordinary_kernel(tmp_path):
    _write_spec(tmp_path, tmp_path / "nobody-listens.sock")
    km, kc = _kernel({**os.environ, "JUPYTER_PATH": str(tmp_path)})
    try:
        text, reply = _run(kc, "print(6 * 7)")
        assert reply["status"] == "ok" and text.strip() == "42"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_an_interrupt_reaches_the_forked_kernel(server):
    proc, env = server
    km, kc = _kernel(env)
    try:
        assert _probe(kc)[0] == proc.pid
        msg_id = kc.execute("import time; time.sleep(60)")
        time.sleep(1.0)
        km.interrupt_kernel()
        start = time.perf_counter()
        while True:
            msg = kc.get_shell_msg(timeout=20)
            if msg["parent_header"].get("msg_id") == msg_id:
                break
        assert msg["content"]["status"] == "error"
        assert msg["content"]["ename"] == "KeyboardInterrupt"
        assert time.perf_counter() - start < 20
        assert _run(kc, "print(1)")[1]["status"] == "ok"  # and it lives on
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


def test_the_kernel_exits_with_its_launcher(server):
    proc, env = server
    km, kc = _kernel(env)
    try:
        ppid, pid, _ = _probe(kc)
        assert ppid == proc.pid
        km.provisioner.process.kill()  # SIGKILL: nothing can be forwarded
        assert _gone_within(pid, 10)
    finally:
        kc.stop_channels()
        km.cleanup_resources()


def test_the_kernel_exits_with_the_server(tmp_path):
    proc, env = _start_server(tmp_path)
    km, kc = _kernel(env)
    try:
        ppid, pid, _ = _probe(kc)
        assert ppid == proc.pid
        proc.kill()  # the build died: nothing closes the server's input politely
        proc.wait(timeout=10)
        assert _gone_within(pid, 10)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_shutdown_leaves_no_kernel_behind(server):
    proc, env = server
    km, kc = _kernel(env)
    _, pid, _ = _probe(kc)
    kc.stop_channels()
    km.shutdown_kernel(now=False)
    assert _gone_within(pid, 10)


def test_the_server_exits_and_cleans_up_when_its_input_closes(tmp_path):
    where = tmp_path / "kernels"
    where.mkdir()
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "serve", str(where / "s.sock"),
                             str(where), ""], stdin=subprocess.PIPE)
    time.sleep(0.5)
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    assert not where.exists()


def test_book_imports_lists_top_level_code_cell_imports(tmp_path):
    (tmp_path / "a.md").write_text(
        "Prose: import this is not code.\n\n"
        "```python\nimport antigravity\n```\n\n"
        "```{code-cell} ipython3\n"
        "import numpy as np, torch\n"
        "from lib import (data,\n    networks as nets)\n"
        "from myst_nb import glue  # comment\n"
        "def f():\n    import inside_a_function\n"
        "```\n")
    assert build_book.book_imports(tmp_path) == [
        "numpy", "torch", "lib:data", "lib:networks", "myst_nb:glue"]


def test_a_socket_it_cannot_bind_ends_the_server_with_one_line(tmp_path):
    too_long = tmp_path / ("x" * 120) / "s.sock"  # beyond AF_UNIX's 108 bytes
    proc = subprocess.run([sys.executable, str(SCRIPT), "serve", str(too_long), "", ""],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "kernels start as usual" in proc.stderr
