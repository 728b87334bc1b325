"""The Faust calls agents/app.py makes beyond Faust's documented API, checked against the installed
Faust: if an upgrade renames or reshapes one of them, this fails before a worker does."""

from __future__ import annotations

import inspect

import faust
import orjson
from faust.transport.consumer import Consumer

from agents.app import QunguardApp, _forwarded
from pipeline.config import load_config


def test_private_commit_takes_a_mapping_of_offsets():
    params = list(inspect.signature(Consumer._commit_offsets).parameters)
    assert params[:2] == ["self", "offsets"]
    assert inspect.iscoroutinefunction(Consumer._commit_offsets)
    # and it updates the committed offsets Faust reads when it seeks after a rebalance
    assert "_committed_offset" in inspect.getsource(Consumer._commit_offsets)


def test_seek_runs_in_the_consumer_thread_and_resets_the_read_offset():
    from faust.transport.consumer import ThreadDelegateConsumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    assert inspect.iscoroutinefunction(ThreadDelegateConsumer.seek_wait)
    source = inspect.getsource(AIOKafkaConsumerThread._seek_wait)
    assert "_read_offset" in source and "call_thread" in inspect.getsource(AIOKafkaConsumerThread.seek_wait)


def test_highwater_and_assignment_calls_exist():
    from faust.transport.consumer import ThreadDelegateConsumer

    assert inspect.iscoroutinefunction(ThreadDelegateConsumer.highwaters)  # asks the broker: end offsets
    app = faust.App("adapter-x", broker="kafka://127.0.0.1:1", web_enabled=False, stream_wait_empty=False)
    assert app.conf.stream_wait_empty is False  # no wait for acks at a rebalance or a stop
    assert callable(app.assignor.assigned_actives)
    # on_stop runs before Faust stops the consumer: the hook that stores what was taken
    assert "_stop_consumer" in inspect.getsource(faust.App.on_stop)
    assert QunguardApp.on_stop is not faust.App.on_stop


def test_tables_expose_their_local_data_and_changelog(tmp_path):
    cfg = load_config(env={"QG_WORKER_DATA_DIR": str(tmp_path)})
    app = faust.App("adapter-check", broker="kafka://127.0.0.1:1", datadir=str(tmp_path), web_enabled=False)
    table = app.Table("state-x", partitions=cfg.kafka.partitions)
    assert isinstance(table.data, dict) or hasattr(table.data, "__setitem__")
    assert table.changelog_topic.get_topic_name().endswith("state-x-changelog")
    stream = app.stream(app.topic("t"))
    assert callable(stream.noack) and callable(stream.noack_take)


def test_forward_header_in_either_form_faust_hands_over():
    assert _forwarded([("qg-origin", b"forward")]) and _forwarded({"qg-origin": b"forward"})
    assert not _forwarded(None) and not _forwarded([("other", b"x")])


def test_the_producer_api_the_ports_build_record_batches_with_is_there():
    """FaustPorts._send_all builds record batches on the aiokafka producer Faust starts."""
    from aiokafka import AIOKafkaProducer
    from faust.transport.drivers.aiokafka import Producer

    assert callable(Producer._ensure_producer)
    assert "self._producer.flush()" in inspect.getsource(Producer.flush)  # Faust's flush covers them
    for name in ("create_batch", "send_batch", "partitions_for"):
        assert callable(getattr(AIOKafkaProducer, name))
    assert list(inspect.signature(AIOKafkaProducer.send_batch).parameters) == ["self", "batch", "topic", "partition"]


def test_changelog_keys_are_written_as_faust_writes_them(tmp_path):
    """TableStore sends changelog records itself; their keys must be the bytes Faust's own table
    writes and its recovery reads (JSON), or a restart recovers nothing."""

    from agents.stores import TableStore

    app = faust.App("adapter-keys", broker="kafka://127.0.0.1:1", datadir=str(tmp_path), web_enabled=False,
                    key_serializer="raw", value_serializer="raw")
    table = app.Table("state-k", partitions=4)
    store = TableStore(table)
    store["g1\x1f张三"] = [1, {}, [2, 5, 0]]  # the engine's envelope: version, state, position
    topic, [(key, _, partition)] = store.changelog(store.snapshot())
    assert topic == table.changelog_topic.get_topic_name() and partition == 2
    assert key == table.changelog_topic.prepare_key("g1\x1f张三", None)[0]
    assert table.changelog_topic.key_serializer == "json" and orjson.loads(key) == "g1\x1f张三"
