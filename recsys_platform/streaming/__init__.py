"""Streaming domain, pure code: events, the Firehose contract, the inference service and its HTTP routes, the stream transformation, delivery, streams, the producer, hourly compaction."""
