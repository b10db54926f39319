"""The command-line contract of train.py, eval.py and data.py: every mistake is one `error:` line.

Exit status: 0 done; 2 a bad input (UserError, a flag that does not parse; one `error:` line on
stderr, the traceback only with --debug); 3 training diverged (Diverged); 128 + signal number when
SIGINT/SIGTERM stopped a run after its checkpoint (Interrupted).
"""
import logging
import os
import re
import signal
import sys


class UserError(Exception):
    """A mistake in what the user asked for; reported as one line, without a traceback."""


class Diverged(Exception):
    """A non-finite loss or parameter; the run stops before anything non-finite is saved."""


class Interrupted(Exception):
    """SIGINT/SIGTERM stopped the run after checkpointing the current step."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
