import logging

from pipeline.delivery.logs import RateLimit


def test_a_flood_of_the_same_error_is_one_line_per_interval():
    clock = [0.0]
    limit = RateLimit(every=10, clock=lambda: clock[0])

    def rec(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", level, __file__, 1, msg, None, None)

    passed = [limit.filter(rec("Unable to connect to %s")) for _ in range(4600)]
    assert sum(passed) == 1
    assert limit.filter(rec("another error"))  # a different message is its own line
    assert limit.filter(rec("debug chatter", logging.INFO)) and limit.filter(rec("debug chatter", logging.INFO))
    clock[0] = 10.5
    r = rec("Unable to connect to %s")
    assert limit.filter(r) and "4599 more like it" in r.msg


def test_the_worker_at_its_default_level_builds_no_record_for_a_debug_call():
    import faust

    from agents.app import faust_worker
    from pipeline.config import load_config

    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    try:
        worker = faust_worker(faust.App("qg-test-logs", broker="memory://"), load_config(env={}).worker.log_level)
        worker.on_setup_root_logger(root, logging.WARNING)  # what Faust calls once it set up logging
        assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
