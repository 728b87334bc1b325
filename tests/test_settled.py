"""How far the member stage may tick: the settled moment of every partition's forwards."""

from __future__ import annotations

from pipeline.delivery.settled import EARLIEST, Progress, settled, stage_bounds


def test_every_partition_stored_to_its_end_bounds_nothing():
    assert settled({0: Progress(10, 500), 1: Progress(4, 900)}, {0: 10, 1: 4}, {}, 100) is None
    assert settled({}, {0: 0, 1: 0}, {}, 100) is None  # empty logs
    assert settled({}, {0: 7}, {0: 7}, 100) is None  # a log emptied by retention


def test_the_slowest_partition_with_records_left_sets_the_bound():
    progress = {0: Progress(10, 5_000), 1: Progress(4, 9_000), 2: Progress(3, 1_000)}
    assert settled(progress, {0: 12, 1: 6, 2: 3}, {}, 100) == 4_900  # partition 2 is stored: idle
    assert settled(progress, {0: 12, 1: 6, 2: 4}, {}, 100) == 900


def test_a_partition_with_records_but_no_progress_holds_everything_back():
    assert settled({0: Progress(10, 5_000)}, {0: 12, 1: 3}, {}, 100) == EARLIEST
    assert settled({0: Progress(10, None)}, {0: 12}, {}, 100) == EARLIEST  # only forwards stored so far


def test_a_stage_fed_by_timers_goes_no_further_than_every_earlier_stage_has_ticked_everywhere():
    stages = [("content", False), ("group", False), ("member", True), ("ladder", True), ("alerts", True)]
    ticked = {0: {"content": 900, "group": 900, "member": 800, "ladder": 700, "alerts": 700},
              1: {"content": 950, "group": 600, "member": 600, "ladder": 600, "alerts": 600}}
    # the member stage waits for partition 1's group timers, and so everything after it
    assert stage_bounds(None, ticked, [0, 1], stages) == {"member": 600, "ladder": 600, "alerts": 600}
    ticked[1] = {"content": 950, "group": 950, "member": 950, "ladder": 950, "alerts": 950}
    assert stage_bounds(None, ticked, [0, 1], stages) == {"member": 900, "ladder": 800, "alerts": 700}
    # the records still to store bound them too
    assert stage_bounds(750, ticked, [0, 1], stages) == {"member": 750, "ladder": 750, "alerts": 700}
    # a partition nobody has ticked yet (its owner catching up) holds every one of them back
    assert stage_bounds(None, ticked, [0, 1, 2], stages) == {"member": EARLIEST, "ladder": EARLIEST,
                                                            "alerts": EARLIEST}
