package mesh

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// The index follows two ordered consumers (ephemeral, unacknowledged, so
// each node has its own and they cost the streams nothing durable):
//
//   - one on the acknowledgements stream, started first, from the stream's
//     end at this process's start: every acknowledgement made after that,
//     on any node, removes its message from the index;
//   - one on the inbox stream, headers only, from the start: every stored
//     message is added.
//
// An acknowledgement made before the first consumer started is found by the
// check each entry gets once before it is first listed or retrieved (index
// entries start unchecked), which also catches a fan-out re-run re-storing
// an acknowledged id. Together they keep "an acknowledged message never
// comes back" without reading the acknowledgements on every list.

const (
	feedInbox = "inbox"
	feedAcks  = "acks"
	// behind is the backlog of a feed worth a warning.
	behind = 10_000
)

type indexMetrics struct {
	ready         prometheus.Gauge
	pending       *prometheus.GaugeVec
	interruptions *prometheus.CounterVec
	// deletes counts the background deleter's requests (deletes.go).
	deletes *prometheus.CounterVec
}

func newIndexMetrics(reg prometheus.Registerer) *indexMetrics {
	m := &indexMetrics{
		ready: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ems_mesh_index_ready",
			Help: "1 when the MESH inbox index has caught up with the streams and answers lists; 0 while lists read the streams."}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ems_mesh_index_pending",
			Help: "Messages the MESH inbox index has yet to read, by feed (inbox, acks)."}, []string{"feed"}),
		interruptions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ems_mesh_index_feed_interruptions_total",
			Help: "Times a MESH inbox index feed was interrupted and resumed, by feed."}, []string{"feed"}),
		deletes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ems_mesh_delete_requests_total",
			Help: "Requests of the single-node background deleter of acknowledged MESH messages: purge (every acknowledged message below the oldest indexed one) or single (one message)."}, []string{"how"}),
	}
	if reg != nil {
		reg.MustRegister(m.ready, m.pending, m.interruptions, m.deletes)
	}
	return m
}

// Ready says whether the index has caught up with the streams, so that
// List and Count answer from it.
func (s *Store) Ready() bool { return s.ready.Load() }

// setReady is called with s.readyMu held.
func (s *Store) setReady(ok bool) {
	s.ready.Store(ok)
	if ok {
		s.metrics.ready.Set(1)
	} else {
		s.metrics.ready.Set(0)
	}
}

// RunIndex feeds the index from the streams until ctx ends, then returns
// nil. A feed that stops is started again where it stopped, keeping the
// index; meanwhile the Store reads the streams.
func (s *Store) RunIndex(ctx context.Context) error {
	const minWait, maxWait = 100 * time.Millisecond, 10 * time.Second
	wait := minWait
	if s.single {
		defer s.startDeletes()()
	}
	for {
		began := time.Now()
		err := s.follow(ctx)
		s.newGeneration()
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(began) > time.Minute {
			wait = minWait
		}
		s.log.Warn("MESH inbox index feed stopped; lists read the streams until it has caught up again",
			"err", err, "retry_in", wait.String())
		s.metrics.interruptions.WithLabelValues("all").Inc()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, maxWait)
	}
}

// feed is one consumer's progress.
type feed struct {
	name     string
	gen      uint64 // the follow it belongs to
	peer     *feed
	cons     jetstream.Consumer
	upToDate atomic.Bool
	cursor   func() uint64 // last stream sequence applied
	warned   atomic.Int64  // unix seconds of the last "behind" warning
	// warnedErr is the unix second of the last interruption warning.
	warnedErr atomic.Int64
}

// newGeneration starts a follow: feeds of earlier ones, whose handlers may
// still be running, no longer change readiness.
func (s *Store) newGeneration() uint64 {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	s.gen++
	s.setReady(false)
	return s.gen
}

// follow runs both consumers until ctx ends or one of them stops.
func (s *Store) follow(ctx context.Context) error {
	acksInfo, err := s.acks.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading the MESH acknowledgement stream's state: %w", err)
	}
	if !s.ackFollowed || acksInfo.State.LastSeq < s.ackCursor.Load() {
		s.ackCursor.Store(acksInfo.State.LastSeq)
		s.ackFollowed = true
	}
	inboxInfo, err := s.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading the MESH inbox stream's state: %w", err)
	}
	if inboxInfo.State.LastSeq < s.idx.appliedSeq() {
		// The stream was deleted and made again: what the index holds
		// names messages that are no longer there.
		s.log.Warn("MESH inbox stream is not the one indexed; rebuilding the index")
		s.idx.reset()
	}
	if s.idx.appliedSeq() == 0 {
		s.created.Store(inboxInfo.Created.UnixNano())
	}

	gen := s.newGeneration()
	acks := &feed{name: feedAcks, gen: gen, cursor: s.ackCursor.Load}
	inbox := &feed{name: feedInbox, gen: gen, cursor: s.idx.appliedSeq, peer: acks}
	acks.peer = inbox
	acks.cons, err = s.acks.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: s.ackCursor.Load() + 1, HeadersOnly: true})
	if err != nil {
		return fmt.Errorf("following MESH acknowledgements: %w", err)
	}
	acksCC, err := acks.cons.Consume(func(msg jetstream.Msg) {
		meta, err := msg.Metadata()
		if err != nil {
			return
		}
		if mb, id, ok := splitSubject(msg.Subject(), AckSubjectPrefix); ok {
			seq, _ := strconv.ParseUint(msg.Headers().Get(HeaderInboxSeq), 10, 64)
			s.idx.acked(mb, id, seq)
		}
		s.ackCursor.Store(meta.Sequence.Stream)
		s.progress(acks, meta.NumPending)
	}, jetstream.ConsumeErrHandler(s.interrupted(acks)))
	if err != nil {
		return fmt.Errorf("following MESH acknowledgements: %w", err)
	}
	defer acksCC.Stop()

	ic := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, HeadersOnly: true}
	if applied := s.idx.appliedSeq(); applied > 0 {
		ic = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: applied + 1, HeadersOnly: true}
	}
	inbox.cons, err = s.stream.OrderedConsumer(ctx, ic)
	if err != nil {
		return fmt.Errorf("following MESH inboxes: %w", err)
	}
	inboxCC, err := inbox.cons.Consume(func(msg jetstream.Msg) {
		meta, err := msg.Metadata()
		if err != nil {
			return
		}
		mb, id, ok := splitSubject(msg.Subject(), SubjectPrefix)
		if ok {
			s.idx.add(mb, id, meta.Sequence.Stream, meta.Timestamp, msg.Headers().Get("Mex-WorkflowID"))
		} else {
			s.idx.skip(meta.Sequence.Stream)
		}
		s.progress(inbox, meta.NumPending)
	}, jetstream.ConsumeErrHandler(s.interrupted(inbox)))
	if err != nil {
		return fmt.Errorf("following MESH inboxes: %w", err)
	}
	defer inboxCC.Stop()

	acksClosed, inboxClosed := acksCC.Closed(), inboxCC.Closed()
	feeds := []*feed{acks, inbox}
	// Messages carry the backlog behind them, but a feed with nothing to
	// deliver (an empty stream, or every message deleted) says nothing:
	// ask the server while not caught up.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-acksClosed:
			return errors.New("the acknowledgement feed closed")
		case <-inboxClosed:
			return errors.New("the inbox feed closed")
		case <-tick.C:
			for _, f := range feeds {
				if f.upToDate.Load() {
					continue
				}
				info, err := f.cons.Info(ctx)
				if err != nil {
					continue
				}
				if info.NumPending == 0 && (info.Delivered.Consumer == 0 || info.Delivered.Stream <= f.cursor()) {
					s.caughtUp(f)
				}
			}
		}
	}
}

// progress notes a feed's backlog after a message.
func (s *Store) progress(f *feed, pending uint64) {
	s.metrics.pending.WithLabelValues(f.name).Set(float64(pending))
	if pending == 0 && !f.upToDate.Load() {
		s.caughtUp(f)
	}
	if pending > behind {
		now := time.Now().Unix()
		if last := f.warned.Load(); now-last >= 60 && f.warned.CompareAndSwap(last, now) {
			s.log.Warn("MESH inbox index is behind its stream", "feed", f.name, "pending", pending)
		}
	}
}

// caughtUp marks f up to date, and the Store ready once both feeds are.
func (s *Store) caughtUp(f *feed) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	f.upToDate.Store(true)
	if f.gen == s.gen && f.peer.upToDate.Load() && !s.ready.Load() {
		s.log.Info("MESH inbox index caught up", "messages", s.idx.size())
		s.setReady(true)
	}
}

// interrupted handles a consumer's error: the ordered consumer starts again
// from where it was by itself; until it has caught up the index may miss
// acknowledgements made elsewhere, so lists read the streams.
func (s *Store) interrupted(f *feed) func(jetstream.ConsumeContext, error) {
	return func(_ jetstream.ConsumeContext, err error) {
		s.readyMu.Lock()
		f.upToDate.Store(false)
		if f.gen == s.gen {
			s.setReady(false)
		}
		s.readyMu.Unlock()
		s.metrics.interruptions.WithLabelValues(f.name).Inc()
		// A consumer that cannot be made again retries by itself, and says
		// so each time: one line per feed and 10 s is enough.
		now := time.Now().Unix()
		if last := f.warnedErr.Load(); now-last >= 10 && f.warnedErr.CompareAndSwap(last, now) {
			s.log.Warn("MESH inbox index feed interrupted; resuming where it was", "feed", f.name, "err", err)
		}
	}
}

// splitSubject splits prefix<mailbox>.<id>; ok is false for any other
// shape (List's subject filter prefix<mailbox>.* matches only this one).
func splitSubject(subject, prefix string) (mailbox, id string, ok bool) {
	rest, found := strings.CutPrefix(subject, prefix)
	if !found {
		return "", "", false
	}
	mailbox, id, found = strings.Cut(rest, ".")
	if !found || mailbox == "" || id == "" || strings.Contains(id, ".") {
		return "", "", false
	}
	return mailbox, id, true
}
