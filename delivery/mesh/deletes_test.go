package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/delivery/internal/testnats"
)

// TestDeferredDeletes: on a single node an acknowledged message is hidden
// at once (not listed, 410, a second Ack not the first) and deleted
// shortly after, by a purge below the floor or one by one above it;
// nothing unacknowledged is removed, neither a message the floor stops at
// nor one outside the mailbox subjects; stopping the index deletes what is
// queued.
func TestDeferredDeletes(t *testing.T) {
	ns := testnats.Start(t, "")
	ctx := context.Background()
	s, err := NewStore(ctx, ns.JS, StreamConfig{SingleNode: true})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = s.RunIndex(runCtx) }()
	defer func() { cancel(); <-stopped }()

	type stored struct {
		mb, id string
		seq    uint64
	}
	var msgs []stored
	put := func(mb string) {
		id := fmt.Sprintf("m%03d", len(msgs))
		msgs = append(msgs, stored{mb, id, store(t, ns.JS, mb, id, "CHANGEOFGP_1")})
	}
	for i := range 20 {
		put(fmt.Sprint("MB", i%4))
	}
	foreign, err := ns.JS.PublishMsg(ctx, &nats.Msg{Subject: SubjectPrefix + "MB0.not.an.id"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		put(fmt.Sprint("MB", i%4))
	}
	put("MBHOLD") // never acknowledged: the floor stops here
	for i := range 20 {
		put(fmt.Sprint("MB", i%4))
	}
	waitIndexed(t, s)

	kept, acked := map[uint64]bool{foreign.Sequence: true}, map[uint64]bool{}
	for _, m := range msgs {
		if m.mb == "MBHOLD" {
			kept[m.seq] = true
			continue
		}
		acked[m.seq] = true
		if first, err := s.ackFirst(ctx, m.mb, m.id, time.Now()); err != nil || !first {
			t.Fatalf("ack %s: first %v, %v", m.id, first, err)
		}
		if _, err := s.Get(ctx, m.mb, m.id); !errors.Is(err, ErrGone) {
			t.Fatalf("Get of acknowledged %s: %v", m.id, err)
		}
		if first, err := s.ackFirst(ctx, m.mb, m.id, time.Now()); err != nil || first {
			t.Fatalf("second ack of %s: first %v, %v", m.id, first, err)
		}
		listed, _, err := s.List(ctx, m.mb, "", 500, nil)
		if err != nil || slices.Contains(ids(listed), m.id) {
			t.Fatalf("acknowledged %s listed: %v %v", m.id, ids(listed), err)
		}
	}
	waitStored(t, s, kept, acked)
	if s.purges.Load() == 0 || s.singleDeletes.Load() == 0 {
		t.Errorf("purges %d, single deletes %d: want both used", s.purges.Load(), s.singleDeletes.Load())
	}

	// Stopping deletes what is queued.
	hold := msgs[slices.IndexFunc(msgs, func(m stored) bool { return m.mb == "MBHOLD" })]
	if err := s.Ack(ctx, hold.mb, hold.id, time.Now()); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-stopped
	delete(kept, hold.seq)
	acked[hold.seq] = true
	if got := storedSeqs(t, s); !holds(got, kept, acked) {
		t.Fatalf("after stop: stored %v, want %v and none of %v", got, kept, acked)
	}
	if _, err := s.Get(ctx, "MB1", msgs[1].id); !errors.Is(err, ErrGone) {
		t.Fatalf("Get after stop: %v", err)
	}
}

func storedSeqs(t *testing.T, s *Store) map[uint64]bool {
	t.Helper()
	got := map[uint64]bool{}
	for seq := uint64(1); ; seq++ {
		m, err := s.stream.GetMsg(context.Background(), seq, jetstream.WithGetMsgSubject(SubjectPrefix+">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got[m.Sequence] = true
		seq = m.Sequence
	}
}

// holds says whether stored has every kept sequence and no acked one (the
// markers of waitIndexed may be there too).
func holds(stored, kept, acked map[uint64]bool) bool {
	for k := range kept {
		if !stored[k] {
			return false
		}
	}
	for k := range acked {
		if stored[k] {
			return false
		}
	}
	return true
}

func waitStored(t *testing.T, s *Store, kept, acked map[uint64]bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := storedSeqs(t, s)
		if holds(got, kept, acked) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored %v, want %v and none of %v", got, kept, acked)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPurgeOnlyTheIndexedStream: an inbox stream deleted and made again
// under a running index is not purged by the floor of the old one.
func TestPurgeOnlyTheIndexedStream(t *testing.T) {
	ns := testnats.Start(t, "")
	ctx := context.Background()
	s, err := NewStore(ctx, ns.JS, StreamConfig{SingleNode: true})
	if err != nil {
		t.Fatal(err)
	}
	store(t, ns.JS, "MB1", "m1", "CHANGEOFGP_1")
	runIndex(t, s)
	if !s.sameStream(ctx) {
		t.Fatal("the indexed stream is not recognised")
	}
	cfg := s.stream.CachedInfo().Config
	if err := ns.JS.DeleteStream(ctx, cfg.Name); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // a later creation time
	if _, err := ns.JS.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if s.sameStream(ctx) {
		t.Fatal("a stream made again passes for the indexed one")
	}
}
