"""A Ctrl-C ends a driver whose MLflow writer waits on a dead server (the writer's half of
``test_faults_tracking.py::test_sigint_is_honoured_while_mlflow_retries``).

The sweep's signal handler stops Tune and, a second later, interrupts the main thread with
``_thread.interrupt_main`` -- which, unlike a real signal, wakes no blocking wait. Tune's
end-of-fit drain used ``Future.result()``: when the interrupt came while it waited on a
call MLflow was still retrying, the driver hung until the retries ran out (CI, 7 Dec: past
the test's 120 s). Each case runs in its own process, with a tracker call that never returns.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from esper_ab.study.writer import BackgroundWriter

STUCK = textwrap.dedent("""
    import _thread, signal, sys, threading
    from esper_ab.study.writer import BackgroundWriter

    # as the sweep's lifecycle does: a process started in the background by a shell
    # inherits SIGINT ignored, and interrupt_main then does nothing
    signal.signal(signal.SIGINT, signal.default_int_handler)

    class Stuck:                      # a tracking server that never answers
        def log_metrics(self, *args):
            threading.Event().wait()

    writer = BackgroundWriter(Stuck())
    writer.submit("log_metrics", "run", {"x": 1.0})
""")


def _run(body: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", STUCK + textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=60)


def test_an_interrupt_ends_a_drain_that_waits_on_a_stuck_call():
    done = _run("""
        import time, traceback

        def interrupt_once_draining():      # as lifecycle's forced stop, once main drains
            main = threading.main_thread().ident
            while not any(f.name == "drain" for f in
                          traceback.extract_stack(sys._current_frames()[main])):
                time.sleep(0.05)
            _thread.interrupt_main()

        threading.Thread(target=interrupt_once_draining, daemon=True).start()
        try:
            writer.drain()
        except KeyboardInterrupt:
            print("interrupted")
            sys.exit(130)
        print("drained")
    """)
    assert done.returncode == 130 and done.stdout.strip() == "interrupted", done.stderr


def test_the_process_exits_without_waiting_for_a_stuck_call():
    done = _run("""
        print("leaving")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "leaving", done.stderr


class _Log:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def log_metrics(self, *args: object) -> str:
        self.calls.append(args)
        return f"logged {args[0]}"

    def broken(self, *args: object) -> None:
        raise OSError("the store is gone")


def test_calls_run_in_order_and_a_failure_is_counted_not_raised(capsys):
    log = _Log()
    writer = BackgroundWriter(log)
    futures = [writer.submit("log_metrics", f"r{i}", {"x": i}) for i in range(20)]
    failed = writer.submit("broken", "r0")
    told: list[str] = []
    writer.submit_then(lambda: told.append("after"), "log_metrics", futures[0])
    writer.drain()
    assert [c[0] for c in log.calls] == [f"r{i}" for i in range(20)] + ["logged r0"]
    assert [f.result() for f in futures] == [f"logged r{i}" for i in range(20)]
    assert failed.result() is None and writer.failures == 1 and told == ["after"]
    assert "MLflow broken failed: OSError: the store is gone" in capsys.readouterr().err


def test_a_dropped_writer_ends_its_thread():
    import gc
    import threading

    before = set(threading.enumerate())
    writer = BackgroundWriter(_Log())
    writer.submit("log_metrics", "r", {}).result(timeout=30)
    (thread,) = [t for t in threading.enumerate() if t not in before]
    assert thread.name == "esper-ab-mlflow" and thread.daemon
    del writer
    gc.collect()
    thread.join(timeout=30)
    assert not thread.is_alive()
