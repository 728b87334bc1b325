"""The ceiling a Faust worker cannot beat: an agent that only decodes each record (orjson) and
counts its events. Prints `events=N seconds=S` measured from its first record to its last."""

from __future__ import annotations

import os
import sys
import time

import faust
import orjson


def main(broker: str, topic: str, expected_records: int, group: str) -> None:
    app = faust.App(group, broker=broker, value_serializer="raw", web_enabled=False,
                    consumer_auto_offset_reset="earliest", broker_session_timeout=6,
                    datadir=f"/tmp/{group}")
    source = app.topic(topic)
    state = {"records": 0, "events": 0, "t0": 0.0}

    @app.agent(source)
    async def decode(stream):
        async for value in stream:
            if not state["records"]:
                state["t0"] = time.perf_counter()
            obj = orjson.loads(value)
            state["events"] += len(obj) if isinstance(obj, list) else 1
            state["records"] += 1
            if state["records"] >= expected_records:
                print(f"events={state['events']} seconds={time.perf_counter() - state['t0']:.4f}", flush=True)
                os._exit(0)  # the figure is out; a clean Faust shutdown from inside its agent deadlocks

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
