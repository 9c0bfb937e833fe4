// Package ingest turns raw admin audit input into shopguard events: sources
// (Kafka, files, embedded broker), decoding, GeoIP enrichment, and the
// handling of input that is not a valid event (counted, logged rate-limited,
// dead-lettered, skipped). ScaleOut is the Kafka-Streams-style topology of
// several instances (repartitioning, ordered stages, a global flags table,
// changelogged per-partition state).
//
// It does not judge events itself: the rules are in detect, and ScaleOut
// runs the engines and the sink its caller gives it. It does not retry or
// restart a source: the caller supervises.
package ingest
