// Package kafka reads and writes the audit topic with kafka-go: the
// consumer-group Source (a group member reading each assigned partition
// from its leader, groupReader; commits in order after the record sinks
// hold a batch's findings, checkpoint-bounded FlushTo and RewindGroup), the time-range RangeSource of `replay --since --until`, the
// Producer behind `generate --brokers`, and the DeadLetter writer. Config is
// the `kafka:` section; its connection keys (brokers, tls, sasl, client_id,
// dial_timeout) are internal/kafkaconf's, shared with alert's findings sink
// and the scale-out runtime.
//
// It decodes with ingest and hands batches on; it does not detect, keep
// detection state, or retry forever: after Config.MaxRetries consecutive
// errors Run returns and the caller supervises. Inside this package the
// kafka-go client is imported as kafkago.
package kafka
