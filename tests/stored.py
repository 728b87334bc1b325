"""Simulated traffic stored the way the worker stores it, without Kafka: the processor, the sink and
the forwarded facts read back as the broker would hand them over, then the timers up to `until`."""

from __future__ import annotations

import orjson

from pipeline.config import Config
from pipeline.processor import Processor
from pipeline.sink.backends import Backend
from pipeline.sink.writer import ClickHouseSink
from schemas.rows import Source


def store(cfg: Config, backend: Backend, records: list[bytes], until: int) -> None:
    processor = Processor(cfg)
    sink = ClickHouseSink(backend, cfg.sink)
    offset, internal, ticks = 0, False, 0
    while records:
        batch = processor.process((r, Source(cfg.topic("events"), 0, offset + i), internal)
                                  for i, r in enumerate(records))
        offset += len(records)
        sink.admit(batch)
        records, internal = [orjson.dumps(f) for f in batch.forward], True
        while not records and ticks < 10:  # the stages a tick feeds tick in turn, as the worker's timer does
            tick = processor.tick(None, until)
            ticks += 1
            sink.admit(tick)
            records = [orjson.dumps(f) for f in tick.forward]
            if not records:
                break
    sink.write(sink.take())
