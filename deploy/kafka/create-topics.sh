#!/bin/bash
# Creates qunguard's topics (docker-compose `topics` service). Partitions bound worker parallelism.
set -e
for t in qg.events qg.findings qg.alerts qg.deadletter; do
  /opt/kafka/bin/kafka-topics.sh --bootstrap-server kafka:9092 --create --if-not-exists \
    --topic "$t" --partitions "${PARTITIONS:-8}" --replication-factor 1
done
