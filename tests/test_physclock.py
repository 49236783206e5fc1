import random

import pytest
from twisted.internet.task import Clock

from bbd.physclock import PhysicalClock


def make(start: float = 1000.0, **kw: float) -> tuple[Clock, PhysicalClock]:
    real = Clock()
    real.advance(start)
    return real, PhysicalClock(source=real.seconds, **kw)


def test_no_skew_follows_the_source() -> None:
    real, clock = make()
    real.advance(12.5)
    assert clock.now() == pytest.approx(1012.5)
    assert clock.offset() == pytest.approx(0.0)


def test_skew_is_a_constant_offset() -> None:
    real, clock = make(skew=5.0)
    assert clock.now() == pytest.approx(1005.0)
    real.advance(100)
    assert clock.now() == pytest.approx(1105.0)
    assert clock.offset() == pytest.approx(5.0)


def test_drift_grows_with_elapsed_time() -> None:
    real, clock = make(drift=0.01)
    real.advance(100)
    assert clock.offset() == pytest.approx(1.0)
    assert clock.now() == pytest.approx(1101.0)


def test_positive_adjustment_is_slewed_not_jumped() -> None:
    real, clock = make()
    clock.adjust(2.0)
    assert clock.now() == pytest.approx(1000.0)  # no jump
    real.advance(1.0)
    # at most 0.5 s of correction per second of real time
    assert clock.offset() == pytest.approx(0.5)
    assert clock.pending() == pytest.approx(1.5)
    real.advance(10.0)
    assert clock.offset() == pytest.approx(2.0)
    assert clock.pending() == 0.0
    assert clock.now() == pytest.approx(1013.0)


def test_negative_adjustment_slows_but_converges() -> None:
    real, clock = make()
    clock.adjust(-3.0)
    before = clock.now()
    real.advance(2.0)
    after = clock.now()
    # ran at half speed: forward, but only 1 s for 2 s of real time
    assert after - before == pytest.approx(1.0)
    real.advance(10.0)
    assert clock.offset() == pytest.approx(-3.0)
    assert clock.pending() == 0.0


def test_adjust_replaces_the_pending_rest() -> None:
    real, clock = make(skew=4.0)
    clock.adjust(-4.0)
    real.advance(2.0)  # 1 s absorbed, clock now 3 s ahead
    assert clock.offset() == pytest.approx(3.0)
    clock.adjust(-3.0)  # Berkeley measures 3 s ahead again
    real.advance(60.0)
    assert clock.offset() == pytest.approx(0.0)


def test_five_second_skew_corrected() -> None:
    real, clock = make(skew=5.0)
    clock.adjust(-clock.offset())
    readings = []
    for _ in range(100):  # 10 s: room for 5 s of correction at 0.5 s/s
        real.advance(0.1)
        readings.append(clock.now())
    assert readings == sorted(readings)
    assert clock.offset() == pytest.approx(0.0)
    assert clock.now() == pytest.approx(real.seconds())


def test_monotonic_under_many_negative_adjustments() -> None:
    rng = random.Random(7)
    real, clock = make(slew_rate=0.5)
    last = clock.now()
    for _ in range(2000):
        if rng.random() < 0.3:
            clock.adjust(-rng.uniform(0, 10))
        dt = rng.uniform(0, 0.5)
        real.advance(dt)
        reading = clock.now()
        assert reading >= last
        # never slower than half speed
        assert reading - last >= 0.5 * dt - 1e-6
        last = reading


def test_never_backwards_even_if_source_steps_back() -> None:
    times = [1000.0]
    clock = PhysicalClock(source=lambda: times[-1])
    times.append(1010.0)
    assert clock.now() == 1010.0
    times.append(1005.0)  # the source steps back 5 s
    assert clock.now() == 1010.0
    times.append(1012.0)
    assert clock.now() == 1012.0


def test_rejects_slew_rate_that_could_stop_the_clock() -> None:
    with pytest.raises(ValueError):
        PhysicalClock(slew_rate=1.0)
