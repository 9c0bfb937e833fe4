// Package generate produces synthetic admin audit traffic with labelled
// attacks mixed in, and scores a detection run against those labels.
//
// The Generator models a platform of shops, each with an owner and a few
// staff who log in from their home city (mostly in Japan) at plausible local
// hours, mistype passwords now and then, work through their orders, export
// small customer lists, change credentials and occasionally travel — always
// slowly enough to be possible. Into that it mixes nine kinds of attack
// episode (credential stuffing with a takeover and a bulk export, brute
// force, a travelling session hijack, address rotation inside an IPv4 /24 or
// an IPv6 /64, an insider's bulk export, a quiet takeover with the right
// password followed by credential changes, a stolen session used from
// another country, and a burst of failures) at a configured rate. Every
// episode is described by a Label: the rules expected to fire, the accounts
// and sources they concern, and its time span. Output is deterministic for a
// seed, in non-decreasing event time, and every public address it uses lies
// in a city block of ingest/geodemo, so the demo GeoIP database locates it.
//
// The benign traffic is shaped to stay clear of the default thresholds of
// SPEC §3 (fewer than 5 failed logins per account per hour, few failing
// accounts per address block, exports far below 10,000 records an hour,
// travel slower than 900 km/h), so that every finding on generated traffic
// is attributable to a label.
//
// Evaluate matches findings against labels and reports precision and recall
// per rule.
//
// Non-goals: the package is not a load tester and does no I/O of its own
// beyond the writers and readers it is handed; it does not talk to Kafka,
// does not pace events in wall-clock time (the caller does, for the demo),
// and does not model any real platform's traffic statistics — only their
// shape.
package generate
