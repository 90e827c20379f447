package delivery

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Default stream names.
const (
	DefaultDeliveriesStream = "EMS_DELIVERIES"
	DefaultDeadStream       = "EMS_DEAD"
)

// StreamsConfig configures the delivery streams.
type StreamsConfig struct {
	Deliveries, Dead string
	Replicas         int
	// DuplicateWindow is how long a re-run fan-out is recognised as such.
	DuplicateWindow time.Duration
}

// Streams are the delivery streams.
type Streams struct {
	Deliveries, Dead jetstream.Stream
}

// EnsureStreams creates or updates the deliveries and dead-letter streams.
// Both are file-backed and never discard: a full store refuses new jobs (the
// fan-out then retries the event) instead of dropping old ones.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, c StreamsConfig) (*Streams, error) {
	if c.Deliveries == "" {
		c.Deliveries = DefaultDeliveriesStream
	}
	if c.Dead == "" {
		c.Dead = DefaultDeadStream
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 10 * time.Minute
	}
	d, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        c.Deliveries,
		Description: "EMS delivery jobs: one per (event, endpoint), removed once terminal",
		Subjects:    []string{JobSubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.WorkQueuePolicy,
		Replicas:    max(c.Replicas, 1),
		Duplicates:  c.DuplicateWindow,
		Discard:     jetstream.DiscardNew,
	})
	if err != nil {
		return nil, fmt.Errorf("creating deliveries stream %s: %w", c.Deliveries, err)
	}
	dead, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        c.Dead,
		Description: "EMS dead letters: jobs that exhausted their attempts, kept for replay",
		Subjects:    []string{DeadSubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    max(c.Replicas, 1),
		Duplicates:  c.DuplicateWindow,
		AllowDirect: true,
		Discard:     jetstream.DiscardNew,
	})
	if err != nil {
		return nil, fmt.Errorf("creating dead-letter stream %s: %w", c.Dead, err)
	}
	return &Streams{Deliveries: d, Dead: dead}, nil
}
