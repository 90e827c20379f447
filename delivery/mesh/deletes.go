package mesh

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// On a single node (StreamConfig.SingleNode) an acknowledged message is
// deleted in the background. Ack records the acknowledgement and drops the
// message from the index, which is all that listing, counting and retrieve
// on this node read: the message stays hidden whether or not it is still
// stored. The deleter then removes acknowledged messages in bulk: every
// message below the index's floor (the oldest message still listed, or
// not yet indexed) is acknowledged, so one purge request up to it removes
// them all, where a delete per message cost the server a JSON API request
// and a tombstone each. Messages above the floor (a mailbox left
// undrained holds it back) are deleted one by one after a tick or two.
//
// A crash loses at most the queued deletes: the restarted index lists a
// message only after checking the acknowledgements stream once, and that
// check finishes the delete (Store.check), as it did for a crash between
// Ack's two steps before.

const (
	// deleteQueue bounds the deletes waiting; when full, Ack deletes
	// itself.
	deleteQueue = 8192
	// deleteEvery is the deleter's tick: a message above the floor is
	// deleted one or two ticks after its acknowledgement.
	deleteEvery = 200 * time.Millisecond
)

// startDeletes starts the deleter; stop ends it after it has deleted what
// was queued.
func (s *Store) startDeletes() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.runDeletes(ctx) }()
	s.deferMu.Lock()
	s.deferring = true
	s.deferMu.Unlock()
	return func() {
		s.deferMu.Lock()
		s.deferring = false // from now on Ack deletes itself
		s.deferMu.Unlock()
		cancel()
		<-done
	}
}

// deferDelete queues the delete of an acknowledged message; false: the
// caller deletes it.
func (s *Store) deferDelete(seq uint64) bool {
	s.deferMu.RLock()
	defer s.deferMu.RUnlock()
	if !s.deferring {
		return false
	}
	select {
	case s.deletes <- seq:
		return true
	default: // the deleter is behind
		return false
	}
}

func (s *Store) runDeletes(ctx context.Context) {
	t := time.NewTicker(deleteEvery)
	defer t.Stop()
	// older were queued before the last tick, newer since: a message
	// above the floor waits a tick for the floor to pass it.
	var older, newer []uint64
	for {
		select {
		case seq := <-s.deletes:
			newer = append(newer, seq)
		case <-t.C:
			older, newer = s.deleteBatch(ctx, older, newer, false), nil
		case <-ctx.Done():
			// Stopping: Ack no longer queues, so what is queued is all.
			for drained := false; !drained; {
				select {
				case seq := <-s.deletes:
					newer = append(newer, seq)
				default:
					drained = true
				}
			}
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s.deleteBatch(fctx, older, newer, true)
			cancel()
			return
		}
	}
}

// deleteBatch purges below the floor, deletes older (and, when all, newer)
// one by one, and returns what of newer is left for the next tick.
func (s *Store) deleteBatch(ctx context.Context, older, newer []uint64, all bool) []uint64 {
	if len(older)+len(newer) == 0 {
		return nil
	}
	if s.ready.Load() {
		s.releaseHold(ctx)
		floor := s.idx.floor()
		below := func(seq uint64) bool { return seq < floor }
		if (anyOf(older, below) || anyOf(newer, below)) && s.sameStream(ctx) {
			if err := s.stream.Purge(ctx, jetstream.WithPurgeSequence(floor)); err != nil {
				s.log.Warn("purging acknowledged MESH messages; deleting them one by one", "below", floor, "err", err)
			} else {
				s.purges.Add(1)
				s.metrics.deletes.WithLabelValues("purge").Inc()
				older, newer = dropIf(older, below), dropIf(newer, below)
			}
		}
	}
	if all {
		older, newer = append(older, newer...), nil
	}
	for _, seq := range older {
		s.singleDeletes.Add(1)
		s.metrics.deletes.WithLabelValues("single").Inc()
		if err := s.stream.DeleteMsg(ctx, seq); err != nil && !DeletedAlready(err) {
			// The message stays hidden here; the next start's check
			// finishes its delete.
			s.log.Warn("deleting an acknowledged MESH message", "seq", seq, "err", err)
		}
	}
	return newer
}

// sameStream says whether the inbox stream is still the one the index was
// built from: one deleted and made again under the running index (an
// operator's doing) numbers new messages below the floor.
func (s *Store) sameStream(ctx context.Context) bool {
	info, err := s.stream.Info(ctx)
	return err == nil && info.Created.UnixNano() == s.created.Load()
}

// releaseHold drops the index's first hold once its message is gone (an
// operator's purge, or a message outside the mailbox subjects deleted), so
// that the floor can pass it.
func (s *Store) releaseHold(ctx context.Context) {
	seq := s.idx.firstHold()
	if seq == 0 {
		return
	}
	if _, err := s.stream.GetMsg(ctx, seq); errors.Is(err, jetstream.ErrMsgNotFound) {
		s.idx.release(seq)
	}
}

func anyOf(seqs []uint64, f func(uint64) bool) bool {
	for _, q := range seqs {
		if f(q) {
			return true
		}
	}
	return false
}

func dropIf(seqs []uint64, f func(uint64) bool) []uint64 {
	out := seqs[:0]
	for _, q := range seqs {
		if !f(q) {
			out = append(out, q)
		}
	}
	return out
}
