// Package ingest turns raw admin audit input into shopguard events: the
// event decoder, the file source (plain, gzip, stdin, parallel decoding with
// order kept), and the handling of input that is not a valid event (counted
// by reason, logged rate-limited with file:line or topic/partition/offset,
// dead-lettered, skipped). Its Metrics count what every source read.
//
// Its subpackages hold one external system each: geoip (MaxMind lookups
// behind a cache), kafka (the consumer-group source, time-range replay, the
// producer and the dead-letter writer), broker (the embedded Kafka-protocol
// broker of the demo), and the demo's generator and GeoIP world.
//
// It does not judge events (that is detect), deliver findings (alert), or
// retry or restart a source: the caller supervises. It imports only the root
// package shopguard.
package ingest
