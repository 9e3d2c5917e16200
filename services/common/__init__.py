"""Infrastructure shared by every service: settings, database, outbox relay,
Kafka consumer, tracing, tokens, problem details and the topology."""
