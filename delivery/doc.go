// Package delivery takes every stored event to the endpoints whose
// subscriptions match it, at least once and without losing any.
//
// It is a pipeline of small stages, each with one owner:
//
//	EMS_EVENTS ──fan-out──► EMS_MESH (built-in mailboxes: stored = delivered)
//	                    └─► EMS_DELIVERIES ──dispatcher──► webhook sender
//	                                                   └─► EMS_DEAD (after the last attempt)
//
// The fan-out derives the event's facts, runs the matcher, groups matches by
// endpoint (one copy per endpoint, however many of its subscriptions
// matched) and stores one job per endpoint, de-duplicated by
// Nats-Msg-Id = event id + endpoint, before it acknowledges the event. The
// dispatcher sends webhook jobs with per-endpoint concurrency, a circuit
// breaker, ordering per (endpoint, NHS number), capped exponential backoff
// with full jitter through JetStream redelivery delays, and dead letters.
// Every attempt is recorded in the delivery log (bbolt, buckets "delivery/…").
package delivery
