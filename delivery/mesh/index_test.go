package mesh

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/delivery/internal/testnats"
)

// runIndex runs s's index until the test ends and waits until it is ready.
func runIndex(t testing.TB, s *Store) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.RunIndex(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for !s.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("index not ready after 10s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

var markers atomic.Int64

// waitIndexed waits until s's index has read everything stored and
// acknowledged before the call: it stores a marker message and a marker
// acknowledgement (in mailbox ZZMARK) and waits for both to be applied.
func waitIndexed(t testing.TB, s *Store) {
	t.Helper()
	ctx := context.Background()
	id := fmt.Sprint("marker", markers.Add(1))
	pa, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: Subject("ZZMARK", id)})
	if err != nil {
		t.Fatal(err)
	}
	aa, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: AckSubjectPrefix + "ZZMARK." + id})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.idx.appliedSeq() < pa.Sequence || s.ackCursor.Load() < aa.Sequence || !s.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("index behind: applied %d of %d, acks %d of %d, ready %v",
				s.idx.appliedSeq(), pa.Sequence, s.ackCursor.Load(), aa.Sequence, s.Ready())
		}
		time.Sleep(time.Millisecond)
	}
}

func store(t testing.TB, js jetstream.JetStream, mb, id, workflow string) uint64 {
	t.Helper()
	h := nats.Header{}
	h.Set("Mex-To", mb)
	h.Set("Mex-WorkflowID", workflow)
	pa, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: Subject(mb, id), Header: h, Data: []byte("<Bundle/>")})
	if err != nil {
		t.Fatal(err)
	}
	return pa.Sequence
}

// ackRecordOnly is an Ack that crashed between its two steps.
func ackRecordOnly(t testing.TB, js jetstream.JetStream, mb, id string, seq uint64) {
	t.Helper()
	h := nats.Header{}
	if seq != 0 {
		h.Set(HeaderInboxSeq, fmt.Sprint(seq))
	}
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: AckSubjectPrefix + mb + "." + id, Header: h}); err != nil {
		t.Fatal(err)
	}
}

func ids(ms []*Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

type listCase struct {
	mailbox, after string
	limit          int
	filter         string
}

// compare lists through the index and through the streams and fails on
// any difference. The index goes first: either may finish deletes.
func compare(t *testing.T, s *Store, c listCase) []string {
	t.Helper()
	ctx := context.Background()
	if !s.Ready() {
		t.Fatal("index not ready")
	}
	got, gotMore, err := s.List(ctx, c.mailbox, c.after, c.limit, workflowFilter(c.filter))
	if err != nil {
		t.Fatal(err)
	}
	want, wantMore, err := s.listStreams(ctx, c.mailbox, c.after, c.limit, workflowFilter(c.filter))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(got), ids(want)) || gotMore != wantMore {
		t.Fatalf("%+v: index lists %v (more %v), streams %v (more %v)", c, ids(got), gotMore, ids(want), wantMore)
	}
	for i := range got {
		if got[i].Seq != want[i].Seq || !got[i].Stored.Equal(want[i].Stored) || got[i].Workflow != want[i].Workflow {
			t.Fatalf("%+v: message %s: index %+v, streams %+v", c, got[i].ID, got[i], want[i])
		}
	}
	n, err := s.Count(ctx, c.mailbox)
	if err != nil {
		t.Fatal(err)
	}
	if c.after == "" && c.filter == "" && !gotMore && n != len(got) {
		t.Fatalf("%s: count %d, listed %d", c.mailbox, n, len(got))
	}
	return ids(got)
}

// TestIndexMatchesStreams drives random stores, acknowledgements (on two
// nodes, some interrupted half way), re-stores of listed and of
// acknowledged ids, and checks that every list the index answers is the
// one the streams give.
func TestIndexMatchesStreams(t *testing.T) {
	ns := testnats.Start(t, "")
	ctx := context.Background()
	a, b := twoNodes(t, ns)
	nodes := []*Store{a, b}

	mailboxes := []string{"MB1", "MB2", "MB3"}
	workflows := []string{"CHANGEOFGP_1", "PDSRECORDCHANGE_1", "VACCINATIONS_1"}
	filters := []string{"", "CHANGEOFGP_1", "!CHANGEOFGP_1", "PDS*", "!*GP*"}
	rng := rand.New(rand.NewPCG(9, 10))
	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	var acked []string // "mb id"
	next := 0
	for round := range 15 {
		for range 20 {
			mb := mailboxes[rng.IntN(len(mailboxes))]
			node := nodes[rng.IntN(2)]
			listed, _, err := node.List(ctx, mb, "", 500, nil)
			if err != nil {
				t.Fatal(err)
			}
			switch op := rng.IntN(10); {
			case op < 5 || len(listed) == 0: // a new delivery
				next++
				store(t, ns.JS, mb, MessageID(at.Add(time.Duration(next)*time.Millisecond), fmt.Sprint("ev", next), mb), workflows[rng.IntN(3)])
			case op < 7: // acknowledged through the API of either node
				m := listed[rng.IntN(len(listed))]
				if err := node.Ack(ctx, mb, m.ID, at); err != nil {
					t.Fatal(err)
				}
				acked = append(acked, mb+" "+m.ID)
			case op < 8: // an Ack that stopped after recording
				m := listed[rng.IntN(len(listed))]
				seq := m.Seq
				if rng.IntN(2) == 0 {
					seq = 0 // as recorded before acknowledgements named it
				}
				ackRecordOnly(t, ns.JS, mb, m.ID, seq)
				acked = append(acked, mb+" "+m.ID)
			case op < 9: // a fan-out re-run re-storing a listed id
				m := listed[rng.IntN(len(listed))]
				store(t, ns.JS, mb, m.ID, m.Workflow)
			default: // ... or an acknowledged one, after the duplicate window
				if len(acked) > 0 {
					mb, id, _ := strings.Cut(acked[rng.IntN(len(acked))], " ")
					store(t, ns.JS, mb, id, workflows[0])
				}
			}
		}
		for _, s := range nodes {
			waitIndexed(t, s)
		}
		for _, s := range nodes {
			for _, mb := range mailboxes {
				all := compare(t, s, listCase{mailbox: mb, limit: 5000})
				for _, f := range filters {
					compare(t, s, listCase{mailbox: mb, limit: 10, filter: f})
				}
				if len(all) > 2 {
					compare(t, s, listCase{mailbox: mb, after: all[rng.IntN(len(all))], limit: 10})
				}
				if len(acked) > 0 {
					_, id, _ := strings.Cut(acked[rng.IntN(len(acked))], " ")
					compare(t, s, listCase{mailbox: mb, after: id, limit: 10, filter: filters[rng.IntN(len(filters))]})
				}
				for _, id := range all {
					if slices.Contains(acked, mb+" "+id) {
						t.Fatalf("round %d: acknowledged %s %s listed", round, mb, id)
					}
				}
			}
		}
	}
	// Every acknowledged id answers 410 on both nodes, and acknowledging
	// again is idempotent.
	for _, k := range acked {
		mb, id, _ := strings.Cut(k, " ")
		for _, s := range nodes {
			if _, err := s.Get(ctx, mb, id); err != ErrGone {
				t.Fatalf("Get of acknowledged %s: %v", k, err)
			}
			if err := s.Ack(ctx, mb, id, at); err != nil {
				t.Fatalf("second Ack of %s: %v", k, err)
			}
		}
	}
}

// TestTwoNodesSeeEachOthersAcks: an acknowledgement on one node removes the
// message from the other's index, and the other answers 410 at once.
func TestTwoNodesSeeEachOthersAcks(t *testing.T) {
	ns := testnats.Start(t, "")
	ctx := context.Background()
	a, b := twoNodes(t, ns)
	store(t, ns.JS, "MB1", "m1", "CHANGEOFGP_1")
	store(t, ns.JS, "MB1", "m2", "CHANGEOFGP_1")
	waitIndexed(t, a)
	waitIndexed(t, b)
	for _, s := range []*Store{a, b} {
		if got, _, _ := s.List(ctx, "MB1", "", 10, nil); !slices.Equal(ids(got), []string{"m1", "m2"}) {
			t.Fatalf("before: %v", ids(got))
		}
	}
	first, err := a.ackFirst(ctx, "MB1", "m1", time.Now())
	if err != nil || !first {
		t.Fatalf("ack on a: %v %v", first, err)
	}
	// b's feed may not have it yet, but the message is gone from its seq.
	if _, err := b.Get(ctx, "MB1", "m1"); err != ErrGone {
		t.Fatalf("b Get: %v", err)
	}
	if first, err := b.ackFirst(ctx, "MB1", "m1", time.Now()); err != nil || first {
		t.Fatalf("b ack again: first %v, %v", first, err)
	}
	waitIndexed(t, b)
	if got, _, _ := b.List(ctx, "MB1", "", 10, nil); !slices.Equal(ids(got), []string{"m2"}) {
		t.Fatalf("b after a's ack: %v", ids(got))
	}
	if n, _ := b.Count(ctx, "MB1"); n != 1 {
		t.Fatalf("b count %d", n)
	}
}

// TestIndexRebuildsOnRestart: a restarted node (server and all) rebuilds
// its index from the streams, does not list what was acknowledged, even by
// an Ack that crashed before its delete, and finishes that delete.
func TestIndexRebuildsOnRestart(t *testing.T) {
	dir := t.TempDir()
	ns := testnats.Start(t, dir)
	ctx := context.Background()
	s, _ := NewStore(ctx, ns.JS, StreamConfig{})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.RunIndex(runCtx) }()
	var want []string
	seqs := map[string]uint64{}
	for i := range 300 {
		id := fmt.Sprintf("m%04d", i)
		seqs[id] = store(t, ns.JS, fmt.Sprint("MB", i%3), id, "CHANGEOFGP_1")
		if i%3 == 0 {
			want = append(want, id)
		}
	}
	waitIndexed(t, s)
	if err := s.Ack(ctx, "MB0", "m0000", time.Now()); err != nil {
		t.Fatal(err)
	}
	ackRecordOnly(t, ns.JS, "MB0", "m0003", seqs["m0003"]) // crashed before deleting
	want = want[2:]
	cancel()
	<-done
	ns.Stop()

	ns = testnats.Start(t, dir)
	s, err := NewStore(ctx, ns.JS, StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	runIndex(t, s)
	t.Logf("ready %v after start", time.Since(began))
	if got := compare(t, s, listCase{mailbox: "MB0", limit: 5000}); !slices.Equal(got, want) {
		t.Fatalf("after restart: %v\nwant %v", got, want)
	}
	if _, err := ns.JS.Stream(ctx, DefaultStream); err != nil {
		t.Fatal(err)
	}
	if _, err := s.stream.GetMsg(ctx, seqs["m0003"]); err == nil {
		t.Fatal("the crashed Ack's delete was not finished")
	}
	if _, err := s.Get(ctx, "MB0", "m0003"); err != ErrGone {
		t.Fatalf("Get of acknowledged: %v", err)
	}
}

// TestContinueFrom pages on from a listed id and from one acknowledged
// meanwhile, with and without a workflow filter.
func TestContinueFrom(t *testing.T) {
	ns := testnats.Start(t, "")
	ctx := context.Background()
	s, _ := NewStore(ctx, ns.JS, StreamConfig{})
	runIndex(t, s)
	var all []string
	for i := range 12 {
		id := fmt.Sprintf("2026112210000%d_%02d", i%10, i)
		wf := []string{"CHANGEOFGP_1", "PDSRECORDCHANGE_1"}[i%2]
		store(t, ns.JS, "MB1", id, wf)
		all = append(all, id)
	}
	waitIndexed(t, s)
	if err := s.Ack(ctx, "MB1", all[4], time.Now()); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		after  string
		filter string
		want   []string
	}{
		{"listed", all[2], "", []string{all[3], all[5], all[6]}},
		{"acknowledged", all[4], "", []string{all[5], all[6], all[7]}},
		{"acknowledged, filtered", all[4], "PDS*", []string{all[5], all[7], all[9]}},
		{"unknown id sorting first", "0", "", []string{all[0], all[1], all[2]}},
		{"last", all[11], "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := compare(t, s, listCase{mailbox: "MB1", after: tc.after, limit: 3, filter: tc.filter})
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestNotYetIndexed: retrieve and acknowledge of a message the index has
// not read yet go to the streams and never answer 404 for it.
func TestNotYetIndexed(t *testing.T) {
	ns := testnats.Start(t, "")
	ctx := context.Background()
	s, _ := NewStore(ctx, ns.JS, StreamConfig{})
	// Ready with an empty index: as if the feed lagged behind every store.
	s.readyMu.Lock()
	s.setReady(true)
	s.readyMu.Unlock()
	store(t, ns.JS, "MB1", "m1", "CHANGEOFGP_1")
	if m, err := s.Get(ctx, "MB1", "m1"); err != nil || m.ID != "m1" || string(m.Body) != "<Bundle/>" {
		t.Fatalf("Get: %v %v", m, err)
	}
	if first, err := s.ackFirst(ctx, "MB1", "m1", time.Now()); err != nil || !first {
		t.Fatalf("Ack: %v %v", first, err)
	}
	if _, err := s.Get(ctx, "MB1", "m1"); err != ErrGone {
		t.Fatalf("Get after Ack: %v", err)
	}
	if _, err := s.Get(ctx, "MB1", "m2"); err != ErrNotFound {
		t.Fatalf("Get unknown: %v", err)
	}
	if err := s.Ack(ctx, "MB1", "m2", time.Now()); err != ErrNotFound {
		t.Fatalf("Ack unknown: %v", err)
	}
}

// TestIndexCompaction removes entries in every order and checks what is
// left, including after the box's slice has been compacted.
func TestIndexCompaction(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, order := range []string{"front", "back", "random"} {
		t.Run(order, func(t *testing.T) {
			x := newIndex()
			const n = 1000
			for i := range n {
				x.add("MB", fmt.Sprintf("m%04d", i), uint64(i+1), time.Unix(int64(i), 0), "W")
				x.byKey[indexKey{"MB", fmt.Sprintf("m%04d", i)}].checked = true
			}
			perm := make([]int, n)
			for i := range perm {
				perm[i] = i
			}
			switch order {
			case "back":
				slices.Reverse(perm)
			case "random":
				rng.Shuffle(n, func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
			}
			left := map[int]bool{}
			for i := range n {
				left[i] = true
			}
			for k, i := range perm[:n-10] {
				x.acked("MB", fmt.Sprintf("m%04d", i), 0)
				delete(left, i)
				if k%97 == 0 {
					var want []string
					for j := range n {
						if left[j] {
							want = append(want, fmt.Sprintf("m%04d", j))
						}
					}
					got, more, unchecked := x.page("MB", "", 5000, nil)
					if more || unchecked != nil || !slices.Equal(ids(got), want) || x.count("MB") != len(want) {
						t.Fatalf("after %d removals: %d listed, %d wanted, count %d", k+1, len(got), len(want), x.count("MB"))
					}
				}
			}
			if b := x.boxes["MB"]; len(b.entries)-b.head > 40 {
				t.Fatalf("10 live entries held in %d slots", len(b.entries)-b.head)
			}
		})
	}
}

// TestRemovedBehindTheIndex: a message deleted without an acknowledgement
// (an operator's purge) answers 404 and is no longer listed.
func TestRemovedBehindTheIndex(t *testing.T) {
	ns := testnats.Start(t, "")
	ctx := context.Background()
	s, _ := NewStore(ctx, ns.JS, StreamConfig{})
	runIndex(t, s)
	seq := store(t, ns.JS, "MB1", "m1", "CHANGEOFGP_1")
	store(t, ns.JS, "MB1", "m2", "CHANGEOFGP_1")
	waitIndexed(t, s)
	if got := compare(t, s, listCase{mailbox: "MB1", limit: 10}); !slices.Equal(got, []string{"m1", "m2"}) {
		t.Fatalf("before: %v", got)
	}
	if err := s.stream.DeleteMsg(ctx, seq); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "MB1", "m1"); err != ErrNotFound {
		t.Fatalf("Get: %v", err)
	}
	if got := compare(t, s, listCase{mailbox: "MB1", limit: 10}); !slices.Equal(got, []string{"m2"}) {
		t.Fatalf("after: %v", got)
	}
}

// twoNodes are two Stores on one JetStream, each with its own connection
// and a running index, as two emsd nodes are.
func twoNodes(t *testing.T, ns *testnats.Server) (a, b *Store) {
	t.Helper()
	ctx := context.Background()
	a, err := NewStore(ctx, ns.JS, StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if b, err = NewStore(ctx, ns.Connect(t), StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	runIndex(t, a)
	runIndex(t, b)
	return a, b
}

// TestDeletedAlready: deleting a message that is gone is what a second
// acknowledgement racing another node's does; JetStream's answer to it
// must be recognised, whatever form it takes.
func TestDeletedAlready(t *testing.T) {
	ns := testnats.Start(t, "")
	ctx := context.Background()
	s, err := NewStore(ctx, ns.JS, StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	store(t, ns.JS, "MB1", "m1", "CHANGEOFGP_1")
	if err := s.stream.DeleteMsg(ctx, 1); err != nil {
		t.Fatal(err)
	}
	err = s.stream.DeleteMsg(ctx, 1)
	if err == nil || !DeletedAlready(err) {
		t.Fatalf("second delete: %v not recognised as already deleted", err)
	}
	// An interior message (others before and after it) answers another
	// way.
	for _, id := range []string{"m2", "m3", "m4"} {
		store(t, ns.JS, "MB1", id, "CHANGEOFGP_1")
	}
	if err := s.stream.DeleteMsg(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.stream.DeleteMsg(ctx, 3); err == nil || !DeletedAlready(err) {
		t.Fatalf("second delete of an interior message: %v not recognised as already deleted", err)
	}
	if DeletedAlready(errors.New("timeout")) || DeletedAlready(nil) {
		t.Fatal("other errors are not 'already deleted'")
	}
}
