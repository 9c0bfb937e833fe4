// Package alert delivers findings: it holds every shopguard.Sink that takes
// findings out of the process.
//
// There are two kinds of sink, and the difference is the point of the
// package:
//
//   - Record sinks (File for JSONL on disk or stdout, Kafka for the findings
//     topic) are on the commit path. Their Send returns only once the
//     findings are durable there, retrying with exponential backoff and
//     jitter until the context is done. A record sink that is down therefore
//     stalls consumption (backpressure) instead of losing findings, and the
//     source commits offsets only after Send returned nil.
//   - Notification sinks (Alertmanager, Webhook) never stall detection. Send
//     only appends to a bounded in-memory queue, dropping the oldest findings
//     when it is full and counting them; a background loop (Run) batches,
//     POSTs and retries. On shutdown Run flushes within a budget and logs what
//     it had to drop. The record sinks still hold every finding.
//
// Fanout combines both kinds behind one Sink, Pseudonymizer replaces actors
// by keyed HMACs before findings leave for external systems, and Build wires
// all of it from a Config (the `sinks:` section of the YAML file).
//
// Secrets (basic-auth passwords, webhook signing secrets and URLs, SASL
// passwords, the pseudonymization key) are read from files or environment
// variables, never from the YAML itself, and never appear in logs or errors.
//
// Non-goals: alert does no detection and no enrichment; it keeps no
// de-duplication state across restarts beyond the deterministic finding ids
// that let every receiver de-duplicate re-deliveries; it has no templating
// engine (Alertmanager, or the webhook receiver, owns presentation); and the
// notification queues live in memory only, so a crash loses what they held
// while the record sinks still have it.
package alert
