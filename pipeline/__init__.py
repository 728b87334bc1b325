"""qunguard: enforcement of work-group rules over Kafka, Faust and ClickHouse."""
