import pytest
from twisted.internet.task import Clock

from bbd.berkeley import Reading, compute_round
from bbd.physclock import PhysicalClock


def reading(offset: float, t_send: float = 100.0, rtt: float = 0.02) -> Reading:
    """A reply from a server ``offset`` seconds ahead, with a symmetric round trip."""
    return Reading(t_send=t_send, server_time=t_send + rtt / 2 + offset, t_recv=t_send + rtt)


def test_offset_corrects_for_half_the_round_trip() -> None:
    # The server read its clock mid-flight: 0.5 s after the send, in sync with us.
    r = Reading(t_send=100.0, server_time=100.5, t_recv=101.0)
    assert r.rtt == pytest.approx(1.0)
    assert r.offset == pytest.approx(0.0)  # naive server_time - t_recv would say -0.5


def test_rtt_correction_in_a_round() -> None:
    result = compute_round(
        "a", {"b": Reading(t_send=10.0, server_time=12.4, t_recv=10.8)}, max_rtt=1.0
    )
    assert result.offsets["b"] == pytest.approx(2.0)
    assert result.target == pytest.approx(1.0)
    assert result.adjustments == pytest.approx({"a": 1.0, "b": -1.0})


def test_in_sync_servers_need_nothing() -> None:
    result = compute_round("a", {"b": reading(0.0), "c": reading(0.0)})
    assert result.adjustments == pytest.approx({"a": 0.0, "b": 0.0, "c": 0.0})


def test_five_second_skew_is_an_outlier_and_corrected() -> None:
    result = compute_round(
        "a", {"b": reading(0.1), "c": reading(-0.1), "d": reading(5.0)}, outlier_threshold=1.0
    )
    assert result.outliers == ("d",)
    assert set(result.averaged) == {"a", "b", "c"}
    assert result.target == pytest.approx(0.0)
    assert result.adjustments["d"] == pytest.approx(-5.0)
    assert result.adjustments["b"] == pytest.approx(-0.1)
    assert result.adjustments["a"] == pytest.approx(0.0)


def test_skewed_coordinator_corrects_itself() -> None:
    # The coordinator is 5 s ahead of everybody: the others read 5 s behind it.
    result = compute_round("a", {"b": reading(-5.0), "c": reading(-5.0)})
    assert result.outliers == ("a",)
    assert result.adjustments == pytest.approx({"a": -5.0, "b": 0.0, "c": 0.0})


def test_outlier_left_out_of_the_average() -> None:
    with_outlier = compute_round("a", {"b": reading(0.2), "c": reading(0.4), "d": reading(60.0)})
    assert with_outlier.outliers == ("d",)
    assert with_outlier.target == pytest.approx(0.2)  # mean of 0, 0.2, 0.4
    # With a loose threshold the same reading drags everybody 15 s forward.
    loose = compute_round(
        "a", {"b": reading(0.2), "c": reading(0.4), "d": reading(60.0)}, outlier_threshold=100
    )
    assert loose.outliers == ()
    assert loose.target == pytest.approx(15.15)


def test_slow_reading_ignored_and_not_adjusted() -> None:
    result = compute_round("a", {"b": reading(0.0), "c": reading(3.0, rtt=4.0)}, max_rtt=1.0)
    assert result.too_slow == ("c",)
    assert "c" not in result.adjustments
    assert result.target == pytest.approx(0.0)


def test_failed_reading_skipped() -> None:
    bad = Reading(t_send=10.0, server_time=10.0, t_recv=9.0)  # reply "before" the request
    result = compute_round("a", {"b": None, "c": reading(0.4), "d": bad})
    assert result.failed == ("b", "d")
    assert set(result.adjustments) == {"a", "c"}
    assert result.target == pytest.approx(0.2)


def test_all_failed_leaves_the_coordinator_alone() -> None:
    result = compute_round("a", {"b": None})
    assert result.adjustments == {"a": 0.0}


def test_even_split_falls_back_to_the_mean() -> None:
    result = compute_round("a", {"b": reading(4.0)})
    assert result.target == pytest.approx(2.0)
    assert result.adjustments == pytest.approx({"a": 2.0, "b": -2.0})


def test_round_then_slew_brings_clocks_together() -> None:
    real = Clock()
    real.advance(1_000.0)
    clocks = {
        "a": PhysicalClock(real.seconds),
        "b": PhysicalClock(real.seconds, skew=0.3),
        "c": PhysicalClock(real.seconds, skew=-0.2),
        "d": PhysicalClock(real.seconds, skew=5.0),
    }
    coordinator = clocks["a"]
    readings: dict[str, Reading | None] = {}
    for name in ("b", "c", "d"):
        t_send = coordinator.now()
        real.advance(0.01)  # request leg
        server_time = clocks[name].now()
        real.advance(0.01)  # reply leg
        readings[name] = Reading(t_send, server_time, coordinator.now())
    result = compute_round("a", readings)
    for name, delta in result.adjustments.items():
        clocks[name].adjust(delta)
    real.advance(30.0)
    times = [c.now() for c in clocks.values()]
    assert max(times) - min(times) < 1e-6
    assert times[0] == pytest.approx(real.seconds() + (0.3 - 0.2) / 3)
