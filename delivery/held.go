package delivery

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// heldEvents are events pulled from the stream and not yet finished. The
// fan-out pulls ahead of its workers, and an event may then wait behind
// its patient's earlier events or behind the pacer (publishing first) for
// longer than the consumer's ack wait; JetStream would deliver it again
// and the fan-out would do its work twice. heldEvents reports every event
// held longer than a third of the ack wait as in progress, which restarts
// JetStream's clock for it.
type heldEvents struct {
	mu   sync.Mutex
	held map[jetstream.Msg]time.Time // when it was pulled or last reported
}

func newHeldEvents() *heldEvents {
	return &heldEvents{held: map[jetstream.Msg]time.Time{}}
}

func (h *heldEvents) add(m jetstream.Msg, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held[m] = now
}

func (h *heldEvents) done(m jetstream.Msg) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.held, m)
}

// overdue returns the events held since before cutoff, marking them as
// reported at now.
func (h *heldEvents) overdue(cutoff, now time.Time) []jetstream.Msg {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []jetstream.Msg
	for m, at := range h.held {
		if at.Before(cutoff) {
			out = append(out, m)
			h.held[m] = now
		}
	}
	return out
}

// keepAlive reports overdue events in progress every ackWait/3 until ctx
// ends.
func (h *heldEvents) keepAlive(ctx context.Context, ackWait time.Duration, now func() time.Time, reported func(int)) {
	every := ackWait / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		at := now()
		msgs := h.overdue(at.Add(-every), at)
		for _, m := range msgs {
			// An event finished meanwhile answers ErrMsgAlreadyAckd
			// without a round trip; the server ignores a late one.
			_ = m.InProgress()
		}
		if len(msgs) > 0 {
			reported(len(msgs))
		}
	}
}
