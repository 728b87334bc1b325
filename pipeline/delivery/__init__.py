"""The worker's delivery path: small named steps from Kafka records to stored rows and commits
(path.py), with the ordering rules in order.py. No Faust, Kafka or ClickHouse imports: the edges
come in as ports (agents/app.py for Faust)."""
