"""The Faust application: settings from qunguard's config, topics, and the agents wired in."""

from __future__ import annotations

import os
from pathlib import Path

import faust

from pipeline.config import Config


def create_app(cfg: Config) -> faust.App:
    session = cfg.kafka.session_timeout_seconds
    Path(cfg.worker.data_dir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        cfg.worker.app_id,
        broker=cfg.kafka.url,
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=cfg.kafka.partitions,
        web_enabled=False,
        datadir=str(Path(cfg.worker.data_dir) / f"worker-{os.getpid()}"),
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session,
        broker_heartbeat_interval=max(session / 5, 0.5),
        broker_rebalance_timeout=max(session * 3, 30.0),
        broker_commit_interval=1.0,
        producer_max_request_size=cfg.kafka.max_message_bytes,
        consumer_max_fetch_size=cfg.kafka.max_message_bytes * 2,
        stream_buffer_maxsize=2048,
        # Detector state lives in memory and is recovered from its changelog; a standby copy would
        # double the memory for a faster failover (agents/tables.py).
        table_standby_replicas=0,
    )
    from agents.ingest import register

    register(app, cfg)
    return app
