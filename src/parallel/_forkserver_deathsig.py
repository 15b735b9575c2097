"""Forkserver preload only: the forkserver dies (SIGKILL) when the driver's main thread ends.

Importing it anywhere else does nothing (the signal is set only inside
``multiprocessing.forkserver.main``); see ``lifetime.py``.
"""

from .lifetime import in_forkserver_main, set_parent_death_signal

if in_forkserver_main():
    set_parent_death_signal()
