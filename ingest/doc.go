// Package ingest turns raw admin audit input into shopguard events: sources
// (Kafka, files, embedded broker), decoding, GeoIP enrichment, and the
// handling of input that is not a valid event (counted, logged rate-limited,
// dead-lettered, skipped).
//
// It does not detect anything, does not deliver findings, and does not retry
// or restart a source: the caller supervises.
package ingest
