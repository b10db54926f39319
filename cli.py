"""The command-line contract of train.py, eval.py and data.py: every mistake is one `error:` line.

Exit status: 0 done; 2 a bad input (UserError, a flag that does not parse; one `error:` line on
stderr, the traceback only with --debug); 3 training diverged (Diverged); 128 + signal number when
SIGINT/SIGTERM stopped a run after its checkpoint (Interrupted); 4 a run stuck in a compiled call
(Watchdog).

Also here, how a training run stops: stop_on_signals (a first SIGINT/SIGTERM finishes the call, a
second stops at once) and Watchdog (a compiled call that never returns ends the process).
"""
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time


class UserError(Exception):
    """A mistake in what the user asked for; reported as one line, without a traceback."""


class Diverged(Exception):
    """A non-finite loss or parameter; the run stops before anything non-finite is saved."""


class Interrupted(Exception):
    """SIGINT/SIGTERM stopped the run after checkpointing the current step."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# A compiled call not finished after this long is taken as stuck (train.py waits for a few calls at a
# time, each a few steps): Watchdog ends the run, exit status 4, with one line. Minutes of margin over
# a slow CPU's call, so only a hang reaches it.
STALL_SECONDS = 900.0
EXIT_STALLED = 4


class StopNow(KeyboardInterrupt):
    """StopNow(signum): a second SIGINT/SIGTERM; the run stops where it is (checkpoints are atomic)."""


@contextlib.contextmanager
def stop_on_signals(stopped_line=lambda name: f'stopped at once by a second {name}'):
    """SIGINT/SIGTERM ask the loop to stop after the current call; a second one stops at once, printing
    stopped_line(signal name) and raising Interrupted. Yields a list that receives the signal numbers."""
    received = []
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield received
        return
    # A signal ignored by whoever started us (nohup, a background job) stays ignored.
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(signum) is not signal.SIG_IGN}

    def handler(signum, frame):
        received.append(signum)
        if len(received) == 2:
            raise StopNow(signum)
        if len(received) == 1:
            print(f'received {signal.Signals(signum).name}: stopping after this step '
                  '(send it again to stop at once; the checkpoints stay intact)', flush=True)

    for signum in previous:
        signal.signal(signum, handler)
    try:
        yield received
    except StopNow as e:
        print(stopped_line(signal.Signals(e.args[0]).name), flush=True)
        raise Interrupted(e.args[0]) from None
    finally:
        for signum, h in previous.items():
            signal.signal(signum, h)


class Watchdog:
    """wait(outputs): jax.block_until_ready(outputs), and if that takes STALL_SECONDS, stalled() ends the
    process with message(): a hung compiled call never returns control to Python, so a thread must."""

    def __init__(self, message):
        self.message, self.deadline, self.lock, self.closed = message, None, threading.Lock(), threading.Event()
        threading.Thread(target=self.watch, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed.set()  # the thread ends within a second

    def wait(self, outputs):
        with self.lock:
            self.deadline = time.monotonic() + STALL_SECONDS
        import jax  # here: data.py's commands use this file too and need no JAX
        try:
            jax.block_until_ready(outputs)
        finally:
            with self.lock:
                self.deadline = None

    def watch(self):
        while not self.closed.wait(min(1.0, STALL_SECONDS / 4)):
            with self.lock:
                late = self.deadline is not None and time.monotonic() > self.deadline
                if late:
                    self.deadline = None
            if late:
                stalled(self.message())


def stalled(message):
    """The watchdog's end of a stuck run: one line, exit status EXIT_STALLED, no cleanup (the main
    thread is inside the hung call; the checkpoints on disk are complete, each written atomically)."""
    print(message, file=sys.stderr, flush=True)
    os._exit(EXIT_STALLED)


def run(main, define_flags=None, errors=(), config_hint=None):
    """Run main(argv) as a command, reporting mistakes as above.

    define_flags(argv): defines (and may check) absl flags, which absl then parses; None when main
    parses argv itself (data.py, with argparse). errors: more exception types that are the user's
    mistake (data.py's DataError). config_hint(argv): where to look when a --config.FIELD flag is
    wrong (train.py: its --print_config); other flag errors point at --helpfull.
    """
    debug = any(re.match(r'^--?debug(=(true|1))?$', a, re.IGNORECASE) for a in sys.argv)
    logging.getLogger('jax._src.xla_bridge').setLevel(logging.ERROR)  # no "TPU not found" line on a CPU
    mistakes = (UserError, Diverged, *errors)

    def guarded(argv):
        try:
            main(argv)
        except Interrupted as e:
            sys.exit(128 + e.signum)
        except BrokenPipeError:  # stdout closed early (`train.py --print_config | head`): not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except mistakes as e:
            if debug:
                raise
            print(f'error: {e}', file=sys.stderr, flush=True)
            sys.exit(3 if isinstance(e, Diverged) else 2)

    if define_flags is None:
        return guarded(sys.argv)
    from absl import app, flags

    def parse(argv):
        try:
            define_flags(argv)
            flags.DEFINE_bool('debug', False, 'show tracebacks for errors')
            return flags.FLAGS(argv)
        except (UserError, flags.Error) as e:
            if debug:
                raise
            message = ' '.join(str(e).split())  # absl's messages may span lines
            hint = ''
            if isinstance(e, flags.Error):
                hint = f' ({config_hint(argv)})' if config_hint and '--config' in message else \
                    f' (see: python {os.path.basename(argv[0])} --helpfull)'
            print(f'error: {message}{hint}', file=sys.stderr, flush=True)
            sys.exit(2)

    app.run(guarded, flags_parser=parse)
