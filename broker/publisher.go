package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/fhir"
)

// Event is an accepted message on its way to the events stream.
type Event struct {
	Subject string
	// MsgID is the JetStream de-duplication key: MessageHeader.id, so that a
	// publisher's retry of the same message is stored once.
	MsgID  string
	Header nats.Header
	Body   []byte
}

// PublishResult is what the store said about a publish.
type PublishResult struct {
	Sequence  uint64
	Duplicate bool // the message id was already stored within the window
}

// Publisher stores an accepted event durably. It returns only once the
// store has acknowledged it: the broker answers 202 on that promise.
type Publisher interface {
	Publish(ctx context.Context, e Event) (PublishResult, error)
}

// PublisherFunc adapts a function to Publisher.
type PublisherFunc func(ctx context.Context, e Event) (PublishResult, error)

// Publish calls f.
func (f PublisherFunc) Publish(ctx context.Context, e Event) (PublishResult, error) {
	return f(ctx, e)
}

var _ Publisher = (*JetStreamPublisher)(nil)

// StreamConfig describes the events stream.
type StreamConfig struct {
	Name            string        // e.g. EMS_EVENTS
	Retention       time.Duration // MaxAge of stored events
	DuplicateWindow time.Duration
	Replicas        int
	MaxBytes        int64 // zero: unlimited
}

// JetStreamPublisher publishes events to the events stream.
type JetStreamPublisher struct {
	js jetstream.JetStream
}

// NewJetStreamPublisher returns a Publisher on js.
func NewJetStreamPublisher(js jetstream.JetStream) *JetStreamPublisher {
	return &JetStreamPublisher{js: js}
}

// EnsureStream creates the events stream, or updates it to cfg when it
// exists with other limits.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	if cfg.Name == "" {
		return nil, errors.New("events stream: name is required")
	}
	sc := jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "FHIR event messages accepted by $process-message",
		Subjects:    []string{fhir.EventSubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      cfg.Retention,
		Duplicates:  cfg.DuplicateWindow,
		Replicas:    max(cfg.Replicas, 1),
		MaxBytes:    cfg.MaxBytes,
		Discard:     jetstream.DiscardOld,
	}
	if sc.MaxBytes == 0 {
		sc.MaxBytes = -1
	}
	s, err := js.CreateOrUpdateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("creating events stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// Publish stores e and waits for the acknowledgement.
func (p *JetStreamPublisher) Publish(ctx context.Context, e Event) (PublishResult, error) {
	msg := &nats.Msg{Subject: e.Subject, Header: e.Header, Data: e.Body}
	ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(e.MsgID))
	if err != nil {
		return PublishResult{}, fmt.Errorf("publishing %s to %s: %w", e.MsgID, e.Subject, err)
	}
	return PublishResult{Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}
