"""The `ftlab` entry point: every command module registered on `app`."""

from __future__ import annotations

import sys
from typing import Any

# each module registers its commands; `ftlab --help` lists them in this order
# isort: off
from ftlab.cli import runs  # noqa: F401
from ftlab.cli import chat  # noqa: F401
from ftlab.cli import plan  # noqa: F401
from ftlab.cli import sweeps  # noqa: F401
from ftlab.cli import reports  # noqa: F401
from ftlab.cli import tracking  # noqa: F401
from ftlab.cli import cache  # noqa: F401
from ftlab.cli import manage  # noqa: F401

# isort: on
from ftlab.cli.app import app, err
from ftlab.runner import progress


def _quiet_libraries() -> None:
    """Keep the terminal for ftlab's own output: one progress bar, then the summary."""
    import logging
    import os
    import warnings

    # bitsandbytes warns on every CPU import that an optional hub-downloaded kernel
    # ("kernels-community") is missing; ftlab never downloads it, so the warning is noise.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*gemv_4bit: an autograd kernel.*")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # hub/transformers bars (shard writing, downloads); the training bar is tqdm's own
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # cpo/simpo/orpo live in trl.experimental, which warns on import; ftlab chose them
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the run ends `interrupted`, resumable, as with Ctrl-C


def main() -> None:
    import signal

    from ftlab.reports.store import StoreBusy

    signal.signal(signal.SIGTERM, _terminate)  # a scheduler's or `kill`'s stop
    _quiet_libraries()
    progress.setup()  # a live display in a terminal, milestone lines in a file
    try:
        app()
    except StoreBusy as exc:  # another process holds the index: say so, no traceback
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted; `ftlab run --resume RUN` continues a run")
        sys.exit(130)


if __name__ == "__main__":
    main()
