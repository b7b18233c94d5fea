"""Warm starts: NNI trials run in a fork of a process that has already imported torch.

Every trial is a new process, and a new process spends seconds importing torch, torchvision, torch's compiler
front end (which every optimizer pulls in) and NNI's dependencies before its first step: about 3 s on a 2-core
CPU, a tenth of a demo trial. Under NNI, ``main_efficientnet.py`` therefore first asks a *warm server* to run it:
a process that imported all that once and forks one child per trial. The child takes the trial process's
standard input, output and error (passed over a Unix socket), its working directory, environment and arguments,
and trains; the trial process that NNI started waits, relays NNI's stop signals to the child, and ends as the
child ended (the same exit status, or death by the same signal), so NNI, the assessor and ``nnictl stop`` see what
they always saw. This is Ray Tune's ``reuse_actors`` idea for NNI's one-process-per-trial model.

* ``python -m efficientnet create`` starts a server for a local experiment while NNI starts; otherwise the first trial
  that finds no server starts one in the background and trains in its own process (cold). Later trials start warm. A
  server serves one Python, one trial script and the package beside it at one state of their code, and one environment
  (the trial's ``NNI_*`` variables, ``CUDA_VISIBLE_DEVICES`` and a shell's ``PWD``-like ones aside): anything else
  gets its own server. It ends after :data:`IDLE_SECONDS` without a trial; its ``.lock`` file beside the socket holds
  its process id, and its ``.log`` its standard error. An ending server removes its socket and lock, and its log when
  empty. A warm trial's log says so on its ``started in`` line.
* The server never touches CUDA (a CUDA context does not survive a fork): each child initialises its own device.
* The socket lives in a folder only its user can enter (``$XDG_RUNTIME_DIR`` or the temporary folder,
  ``efficientnet-nni-<uid>``); the server also checks that a client is the same user.
* Off: ``EFFICIENTNET_NNI_WARM_START=0`` in the trial's environment. Hand runs and ``torchrun`` never use it.
* If the server ends while its child trains, the trial process waits for the child and then fails with one line.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Sequence

__all__ = ["ENV_SWITCH", "IDLE_SECONDS", "enabled", "server_key", "socket_path", "hand_over", "prestart", "serve",
           "forked"]

ENV_SWITCH = "EFFICIENTNET_NNI_WARM_START"
IDLE_SECONDS = 120.0
MAX_SOCKET_PATH = 100  # bytes: a Unix socket's path is limited to 104 (macOS) or 108 (Linux)
CONNECT_TIMEOUT = 10.0  # seconds to wait for the server to fork the trial's child
PER_TRIAL_ENV = ("NNI_", "CUDA_VISIBLE_DEVICES")  # what NNI sets per trial; the rest must match the server's
# what a shell changes from one command to the next (a non-interactive one drops PS1), and what NNI's manager
# sets in its own environment under the launcher's guard (efficientnet/nni_guard.js)
SHELL_ENV = ("_", "PWD", "OLDPWD", "SHLVL", "PS1", ENV_SWITCH, "EFFICIENTNET_NNI_GUARD")
PLATFORMS = ("local", "remote")  # NNI_PLATFORM of the training services whose machines run trial after trial
TORCHRUN_ENV = ("TORCHELASTIC_RUN_ID", "LOCAL_RANK", "WORLD_SIZE")
# imported by the server: the trial's modules and what they import later; for NNI, only its heavy dependencies
# (NNI reads the trial's NNI_* variables when it is imported, so each trial imports NNI itself)
PRELOAD = ("torch.utils.tensorboard", "torch.utils.flop_counter", "efficientnet.profiler", "scipy.stats", "pandas",
           "requests", "json_tricks")


_forked = False  # set in a trial's child


def forked() -> bool:
    """True in a trial that a warm server forked (for the trial's start-up line)."""
    return _forked


def enabled(environ: dict[str, str] | None = None) -> bool:
    """Warm starts apply: a trial of NNI's local or remote training service (where a machine runs one trial after
    another; a Kubernetes pod runs one), not a hand run, not a ``torchrun`` rank, not switched off, on a system with
    fork and Unix sockets."""
    env = os.environ if environ is None else environ
    return (env.get("NNI_PLATFORM") in PLATFORMS and env.get(ENV_SWITCH, "1") != "0"
            and not any(name in env for name in TORCHRUN_ENV)
            and hasattr(os, "fork") and hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds"))


def server_key(script: Path, environ: dict[str, str] | None = None) -> str:
    """What a server must share with a trial: this Python, the trial script and the code it runs (the script and
    this package beside it: the files' sizes and times), and the environment without the per-trial variables."""
    env = os.environ if environ is None else environ
    script = script.resolve()
    h = hashlib.sha256()
    h.update(f"{sys.executable}\0{script}\0".encode())
    for path in sorted([script, *(script.parent / __package__).rglob("*.py")]):
        with contextlib.suppress(OSError):
            st = path.stat()
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    for name in sorted(env):
        if not name.startswith(PER_TRIAL_ENV) and name not in SHELL_ENV:
            h.update(f"{name}={env[name]}\0".encode())
    return h.hexdigest()[:24]


def socket_path(key: str, environ: dict[str, str] | None = None) -> Path | None:
    """The server's socket, in a folder only this user can enter (under ``XDG_RUNTIME_DIR`` of ``environ``, default
    this process's environment); None when no such folder can be had."""
    env = os.environ if environ is None else environ
    base = Path(env.get("XDG_RUNTIME_DIR") or "/tmp") / f"efficientnet-nni-{os.getuid()}"
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        st = base.stat()
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None  # someone else's folder, or one others can enter: no warm start
    path = base / f"{key}.sock"
    return path if len(os.fsencode(path)) < MAX_SOCKET_PATH else None


# ------------------------------------------------------------------------------------------------ the client
def hand_over(script: Path, argv: Sequence[str], launched: float) -> None:
    """Run this trial in a warm server's child and end this process as the child ended; return (to train here,
    cold) when warm starts are off or no server answers, after starting one for the next trials."""
    if not enabled():
        return
    script = script.resolve()
    path = socket_path(server_key(script))
    if path is None:
        return
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(CONNECT_TIMEOUT)
        conn.connect(str(path))
        socket.send_fds(conn, [b"T"], [0, 1, 2])
        request = {"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ), "launched": launched,
                   "script": str(script)}
        body = json.dumps(request).encode()
        conn.sendall(struct.pack("!I", len(body)) + body)
        reader = conn.makefile("rb")
        first = reader.readline().split()
    except OSError:
        conn.close()
        _start_server(path, script)
        return
    if len(first) != 2 or first[0] != b"pid":
        conn.close()  # the server closes a request it cannot serve: train here
        return
    conn.settimeout(None)
    _relay(int(first[1]), reader)


def _relay(pid: int, reader) -> None:
    """Forward stop signals to the child ``pid``; end as it ended (the server's last line says how)."""
    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    line = reader.readline().split()
    if len(line) == 2 and line[0] in (b"exit", b"signal"):
        value = int(line[1])
        if line[0] == b"exit":
            os._exit(value)
        from .stopping import die_by

        die_by(value)
    while _alive(pid):  # the server died: its child goes on by itself
        time.sleep(0.5)
    print("error: the warm-start server ended while this trial trained, so its exit status is unknown; see the "
          f"trial's log, and set {ENV_SWITCH}=0 in the trial's environment to run trials without it",
          file=sys.stderr, flush=True)
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prestart(script: Path, environ: dict[str, str]) -> subprocess.Popen | None:
    """Start a server for the trials an experiment will start: ``script`` (the trial script), run by this Python
    with ``environ`` and NNI's per-trial variables. ``python -m efficientnet create`` calls it for a local
    experiment, so that its first trials start warm too. None when warm starts do not apply."""
    if not enabled({**environ, "NNI_PLATFORM": "local"}):
        return None
    script = script.resolve()
    path = socket_path(server_key(script, environ), environ)
    return None if path is None else _start_server(path, script, environ)


def _start_server(path: Path, script: Path, environ: dict[str, str] | None = None) -> subprocess.Popen | None:
    """Start a server for ``path`` in the background (it exits at once if another one holds the lock)."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if not k.startswith(PER_TRIAL_ENV)}
    try:
        with open(path.with_suffix(".log"), "ab") as err:
            return subprocess.Popen([sys.executable, "-m", "efficientnet.warm_start", str(path), str(script)],
                                    cwd=str(script.parent), env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, close_fds=True)
    except OSError:
        return None


# ------------------------------------------------------------------------------------------------ the server
def serve(path: Path, script: Path, idle_seconds: float = IDLE_SECONDS) -> int:
    """Import what a trial of ``script`` needs, then fork a child for each trial that connects to ``path``, until
    idle; then remove the socket, the lock and an empty log, so that the folder holds only the servers that run."""
    lock = _lock(path.with_suffix(".lock"))
    if lock is None:
        return 0  # another server serves this key
    try:
        _serve(path, script, idle_seconds, lock)
    except Exception:
        import traceback

        traceback.print_exc()  # into the log, before the log is looked at
        return 1
    finally:
        sys.stderr.flush()
        _remove_files(path, lock)
    return 0


def _serve(path: Path, script: Path, idle_seconds: float, lock: IO[str]) -> None:
    """Preload, listen on ``path`` and fork a child per trial until idle (``lock`` is closed in each child)."""
    sys.path.insert(0, str(script.parent))  # where a trial process run as ``python script`` imports from
    _preload(script.stem)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(16)
    listener.setblocking(False)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    children: dict[int, socket.socket] = {}
    last_busy = time.monotonic()
    while children or time.monotonic() - last_busy < idle_seconds:
        for key, _ in sel.select(timeout=1.0):
            if key.data == "accept":
                _accept(listener, sel, children, (listener, wake_r, wake_w, lock))
            elif key.data == "wake":
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
            else:  # the trial process closed its end (killed): its child goes too
                with contextlib.suppress(ProcessLookupError):
                    os.kill(key.data, signal.SIGKILL)
                sel.unregister(key.fileobj)
        _reap(children, sel)
        if children:
            last_busy = time.monotonic()


def _lock(path: Path) -> IO[str] | None:
    """``path`` opened and locked, holding this process's id; None when another server holds it."""
    while True:
        lock = open(path, "a+")  # not "w": that would empty a running server's pid
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            return None
        try:
            current = os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        lock.close()  # the server that held it removed it as it ended: lock the file that is there now
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _remove_files(path: Path, lock: IO[str]) -> None:
    """An ending server's files: its log when nothing was written to it (standard error is the log), the socket,
    then the lock, still held, so that a server starting meanwhile locks a new file."""
    log = path.with_suffix(".log")
    with contextlib.suppress(OSError):
        if os.fstat(2).st_size == 0 and os.path.samestat(os.fstat(2), os.stat(log)):
            log.unlink()
    for done in (path, path.with_suffix(".lock")):
        with contextlib.suppress(FileNotFoundError):
            done.unlink()
    lock.close()


def _preload(module: str) -> None:
    """Import the trial script (as ``module``), the modules it imports and what a trial imports later; make one
    optimizer (which imports torch's compiler front end). Nothing here may initialise CUDA."""
    import torch

    importlib.import_module(module)
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    if torch.cuda.is_initialized():
        raise RuntimeError("the warm-start server initialised CUDA; its children could not use the GPU")


def _accept(listener: socket.socket, sel: selectors.BaseSelector, children: dict[int, socket.socket],
            inherited: tuple) -> None:
    """Take one trial's request (its standard streams, then its folder, environment and arguments) and fork its
    child. After the request the trial process sends nothing: the connection turns readable only when it ends."""
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return
    fds: list[int] = []
    try:
        conn.settimeout(5.0)
        if not _same_user(conn):
            raise ConnectionError("another user")
        _, fds, _, _ = socket.recv_fds(conn, 1, 3)
        (size,) = struct.unpack("!I", _recv_exactly(conn, 4))
        request: dict[str, Any] = json.loads(_recv_exactly(conn, size))
        if len(fds) != 3:
            raise ConnectionError("no standard streams")
        conn.settimeout(None)
    except (OSError, ValueError, struct.error):
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    pid = os.fork()
    if pid == 0:  # the trial's child: never returns
        sel.close()
        listener_, wake_r, wake_w, lock = inherited
        for other in (listener_, lock, *children.values()):
            other.close()
        for fd in (wake_r, wake_w):
            os.close(fd)
        _child(conn, fds, request)
    for fd in fds:
        os.close(fd)
    children[pid] = conn
    sel.register(conn, selectors.EVENT_READ, pid)


def _same_user(conn: socket.socket) -> bool:
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is None:
        return True  # the socket's folder is private to this user already
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, so_peercred, struct.calcsize("3i")))
    return uid == os.getuid()


def _reap(children: dict[int, socket.socket], sel: selectors.BaseSelector) -> None:
    """Tell each ended child's trial process how it ended."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        line = f"signal {os.WTERMSIG(status)}\n" if os.WIFSIGNALED(status) else f"exit {os.waitstatus_to_exitcode(status)}\n"
        with contextlib.suppress(OSError, KeyError, ValueError):
            sel.unregister(conn)
        with contextlib.suppress(OSError):
            conn.sendall(line.encode())
        conn.close()


def _child(conn: socket.socket, fds: list[int], request: dict[str, Any]) -> None:
    """Become the trial: its standard streams, folder, environment and arguments; train; exit."""
    global _forked
    _forked = True
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin, sys.stdout, sys.stderr = (open(0, "r", closefd=False), open(1, "w", closefd=False),
                                             open(2, "w", closefd=False))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [request["script"], *request["argv"]]
        os.setsid()  # out of the server's session: a signal to the server's group does not reach a trial
        conn.sendall(f"pid {os.getpid()}\n".encode())
        script = importlib.import_module(Path(request["script"]).stem)  # the server's own: the key holds its path
        code = script.main(request["argv"], launched=request["launched"])
    except SystemExit as exc:  # argparse's --help and usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        from .stopping import exit_now

        exit_now(code)


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the trial process closed the connection")
        data += chunk
    return data


if __name__ == "__main__":  # run as efficientnet.warm_start, not __main__: the children read its flag
    from efficientnet import warm_start

    sys.exit(warm_start.serve(Path(sys.argv[1]), Path(sys.argv[2])))
