"""Streaming domain, pure code: the transport of activity events (events, the Firehose contract, streams, delivery, the producer) and the hourly compaction of the answers."""
