"""StopSignals: SIGINT/SIGTERM become TrialStopped, except inside a critical section, where they wait for its end;
the previous handlers come back afterwards. Real signals sent to this process."""

from __future__ import annotations

import os
import signal

import pytest

from efficientnet.stopping import StopSignals, TrialStopped, critical


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_raises_at_once_outside_and_after_a_critical_section(sig):
    before = signal.getsignal(sig)
    with StopSignals():
        with pytest.raises(TrialStopped) as raised:
            os.kill(os.getpid(), sig)  # Python runs the handler at the next bytecode
        assert raised.value.signum == sig and raised.value.name == signal.Signals(sig).name
        finished = []
        with pytest.raises(TrialStopped):
            with critical():
                os.kill(os.getpid(), sig)
                for _ in range(1000):  # the handler has run by now; the section goes on
                    pass
                finished.append("section")
        assert finished == ["section"]
    assert signal.getsignal(sig) is before


def test_critical_is_harmless_without_stop_signals():
    """Outside a trial (no StopSignals), a critical section changes no signal handler and defers nothing."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(KeyboardInterrupt):  # Python's own SIGINT handler still interrupts at once
        with critical():
            assert {sig: signal.getsignal(sig) for sig in before} == before
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1_000_000):
                pass
            pytest.fail("the section went on after SIGINT")
    assert {sig: signal.getsignal(sig) for sig in before} == before
