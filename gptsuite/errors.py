"""Errors a user can cause, and the wrapper that turns them into one line and an exit code.

A traceback is for bugs. Anything the user can fix (a missing dataset, a corrupt checkpoint)
raises UserError with one sentence that says what to do, a bad setting configurator.ConfigError;
entry points run their main() through `cli` so that sentence is all the user sees.
"""

import os
import sys

from configurator import ConfigError


class UserError(Exception):
    """A problem with the user's input, reported as one line on stderr and a non-zero exit."""

    exit_code = 1


def speaks() -> bool:
    """Whether this process prints the error line: every process but torchrun's workers other than
    the first on each node. A user's mistake (a setting, the data, a checkpoint) is the same on
    every rank, so one line per node's console says it; one per rank would repeat it N times."""
    return os.environ.get("LOCAL_RANK", "0") == "0"


def leave(code: int = 0) -> None:
    """End a torchrun worker whose run is over (its process group destroyed) without the
    interpreter's finalization: gloo's threads can still hold tensors then, and freeing them while
    the interpreter is torn down aborts the process ('terminate called without an active
    exception', now and then under load) after a run that finished. Output is flushed first."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cli(main) -> None:
    """Run main(argv) as a command line entry point."""
    try:
        main(sys.argv[1:])
        if "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ):
            leave(0)
    except (UserError, ConfigError) as e:
        if speaks():
            print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        if speaks():
            print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # the reader went away (python train.py --help | head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not fail again
        sys.exit(141)
