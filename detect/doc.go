// Package detect turns a stream of audit events into findings.
//
// The Engine evaluates the rules of SPEC §3 — impossible_travel,
// brute_force, credential_stuffing, account_takeover and bulk_export — over
// per-account and per-source state whose windows run on event time, never
// on the wall clock, so that a replay of a month of logs gives the findings
// the live run gave. State is bounded twice: entries idle for longer than
// the longest window that can still use them are evicted as event time
// advances, and a configured cap evicts the oldest generation first.
//
// The engine is single-threaded and deterministic: the same events in the
// same order yield the same findings with the same ids. It does not read
// Kafka or files, locate addresses (a shopguard.Locator is injected) or
// deliver findings; Run hands them to a shopguard.Sink and acknowledges the
// batch only after the sink has accepted them.
package detect
