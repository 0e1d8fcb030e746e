"""Signals and child processes: SIGINT, SIGTERM and SIGHUP end a build or a benchmark the
way Ctrl-C does (staging folder removed, one line, exit 128 + the signal), and every child
edgekd starts (the benchmark worker, ssh) dies with it, even when edgekd is SIGKILLed.

Standard library only: the CLI, the pipeline and the measurements all use it.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from types import FrameType

_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def run_child(cmd: list[str], *, input: bytes | None, timeout: float,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """``subprocess.run`` for edgekd's children: killed by :func:`kill_children` and when
    this thread unwinds (KeyboardInterrupt, timeout). The benchmark worker also asks the
    kernel to kill it when edgekd dies (``device/worker.py``); no ``preexec_fn`` here, which
    would fork a process that has threaded libraries loaded."""
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env) as proc:
        with _LIVE_LOCK:
            _LIVE.add(proc)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:
            proc.kill()  # Popen.__exit__ then waits for it
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def kill_children() -> None:
    """Kill every child :func:`run_child` started that is still running (other threads')."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        with contextlib.suppress(OSError):
            proc.kill()


# --- interrupts ------------------------------------------------------------------------

CAUGHT = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
_received: list[int] = []
_ours: set[signal.Signals] = set()  # the signals catch_interrupts handles right now


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def _unraisable(args: sys.UnraisableHookArgs) -> None:
    """The signal handler's KeyboardInterrupt, raised while Python ran a finalizer (a weakref
    callback, ``__del__``), where it cannot propagate: Python would print "Exception ignored
    in ..." with a traceback. It is kept in ``_received`` and raised again at the next
    :func:`raise_if_interrupted` (between build steps), so it is dropped here quietly."""
    if isinstance(args.exc_value, KeyboardInterrupt) and _received:
        return
    _saved_unraisable[0](args)


_saved_unraisable = [sys.unraisablehook]


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt again if a signal came and something swallowed the first one;
    put edgekd's handler back if a library replaced it. Called between build steps."""
    for sig in _ours:
        if signal.getsignal(sig) is not _on_signal:
            signal.signal(sig, _on_signal)
    if _ours and _received:
        raise KeyboardInterrupt


def interrupt_exit_code() -> int:
    """128 + the first signal that came (130 SIGINT, 143 SIGTERM, 129 SIGHUP), as shells do."""
    return 128 + (_received[0] if _received else signal.SIGINT)


@contextlib.contextmanager
def catch_interrupts() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt inside (main thread only), and
    every child still running is killed on the way out.

    SIGHUP stays ignored if it was (``nohup``). SIGINT is caught even if it was ignored: a
    shell starts background jobs (``edgekd build &`` in a script, a CI runner's children)
    with SIGINT ignored, and Python keeps it so, which made ``kill -INT`` a silent no-op
    and the build ran on to the end."""
    if threading.current_thread() is not threading.main_thread() or _ours:
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in CAUGHT}
    _received.clear()
    _saved_unraisable[0] = sys.unraisablehook
    sys.unraisablehook = _unraisable
    for sig, handler in saved.items():
        nohup = handler is signal.SIG_IGN and sig == getattr(signal, "SIGHUP", None)
        if handler is not None and not nohup:
            signal.signal(sig, _on_signal)
            _ours.add(sig)
    try:
        yield
    except BaseException:
        kill_children()
        raise
    finally:
        _ours.clear()
        sys.unraisablehook = _saved_unraisable[0]
        for sig, handler in saved.items():
            if handler is not None:  # None: a handler set outside Python, left as it was
                signal.signal(sig, handler)
