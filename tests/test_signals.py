import os
import signal
import time

import pytest

from spikevimformer.engine.signals import StopSignals


def test_first_signal_is_a_request_and_a_later_ctrl_c_stops_at_once():
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    stop = StopSignals()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested
        os.kill(os.getpid(), signal.SIGINT)  # within a second: torchrun's forwarded copy of the same Ctrl-C
        time.sleep(1.1)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # the handler runs between bytecodes
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is before


def test_under_ddp_a_second_ctrl_c_never_interrupts_mid_step():
    stop = StopSignals(escalate=False)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1.1)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        assert stop.requested
    finally:
        stop.restore()
