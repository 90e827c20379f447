package subscription

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// memLog is an ordered log shared by stores, standing in for the change
// log stream so that the Store's side of the Committer contract can be
// tested alone (subscription/replog tests the real one on JetStream).
type memLog struct {
	mu      sync.Mutex
	entries []Change
}

func (l *memLog) since(seq uint64) []Change {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Change(nil), l.entries[seq:]...)
}

// committer is one node's Commit: append when the change follows the log's
// tail, else report it stale; either way catch the node up.
type committer struct {
	log   *memLog
	store **Store
	stale int
}

func (c *committer) Commit(ch Change) error {
	c.log.mu.Lock()
	ok := ch.Seq == uint64(len(c.log.entries))+1
	if ok {
		c.log.entries = append(c.log.entries, ch)
	}
	c.log.mu.Unlock()
	s := *c.store
	cur, _ := s.Seq()
	if err := s.ApplyBatch(c.log.since(cur)); err != nil {
		return err
	}
	if !ok {
		c.stale++
		return ErrStale
	}
	return nil
}

func openCommitted(t *testing.T, log *memLog) (*Store, *committer, *bolt.DB) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "ems.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	c := &committer{log: log}
	s, err := NewStore(StoreOptions{DB: db, Committer: c})
	if err != nil {
		t.Fatal(err)
	}
	c.store = &s
	return s, c, db
}

func TestCommitterRebuildsStaleWrites(t *testing.T) {
	log := &memLog{}
	a, _, _ := openCommitted(t, log)
	b, bc, _ := openCommitted(t, log)

	first, err := a.Create(testSub(t, "A81001", "https://a.example/hook", base+"&Patient.identifier="+nhsA+"&MessageHeader.event=vaccinations-1", StatusActive), "asid:1", CreateOptions{RejectDuplicate: true})
	if err != nil {
		t.Fatal(err)
	}
	// B has not seen A's create: its duplicate check runs on an old view,
	// the log refuses the change, B catches up, rebuilds and now rejects.
	_, err = b.Create(testSub(t, "A81001", "https://a.example/hook", base+"&Patient.identifier="+nhsA+"&MessageHeader.event=vaccinations-1", StatusActive), "asid:1", CreateOptions{RejectDuplicate: true})
	var dup *DuplicateError
	if !errors.As(err, &dup) || dup.ExistingID != first.ID {
		t.Fatalf("create on a stale node: err = %v, want duplicate of %s", err, first.ID)
	}
	if bc.stale != 1 {
		t.Errorf("stale rebuilds = %d, want 1", bc.stale)
	}
	// An update on B built on the current view commits at once.
	if _, err := b.SetStatus(first.ID, StatusOff, "op", "test"); err != nil {
		t.Fatal(err)
	}
	cur, _ := a.Seq()
	if err := a.ApplyBatch(log.since(cur)); err != nil {
		t.Fatal(err)
	}
	got, err := a.Get(first.ID)
	if err != nil || got.Status != StatusOff || got.VersionID != 2 {
		t.Fatalf("A after B's update: %+v %v", got, err)
	}
	for _, s := range []*Store{a, b} {
		if seq, _ := s.Seq(); seq != 2 {
			t.Errorf("seq = %d, want 2", seq)
		}
	}
}

func TestApplyBatchRefusesGap(t *testing.T) {
	s, _, _ := openCommitted(t, &memLog{})
	sub := testSub(t, "A81001", "https://a.example/hook", base+"&Patient.identifier="+nhsA+"&MessageHeader.event=vaccinations-1", StatusActive)
	sub.ID = "0001"
	err := s.ApplyBatch([]Change{{Seq: 1, Op: OpPut, ID: "0001", Subscription: &sub}, {Seq: 3, Op: OpDelete, ID: "0001"}})
	if err == nil {
		t.Fatal("gap accepted")
	}
	if seq, _ := s.Seq(); seq != 0 {
		t.Errorf("seq after a refused batch = %d, want 0 (nothing applied)", seq)
	}
}

func TestSnapshotRestore(t *testing.T) {
	src, _ := openTestStore(t, filepath.Join(t.TempDir(), "src.db"), nil)
	var ids []string
	for i := range 50 {
		sub := testSub(t, "A81001", fmt.Sprintf("https://h%d.example/hook", i%7),
			base+"&Patient.identifier="+validNHS(i*13)+"&MessageHeader.event=vaccinations-1", StatusActive)
		got, err := src.Create(sub, "asid:1", CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got.ID)
	}
	if _, err := src.SetStatus(ids[3], StatusOff, "op", "n"); err != nil {
		t.Fatal(err)
	}
	if err := src.Delete(ids[4], "op"); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	seq, err := src.Snapshot(&buf)
	if err != nil || seq != 52 {
		t.Fatalf("snapshot seq %d err %v", seq, err)
	}

	// The target has content of its own, which the restore replaces.
	dst, _ := openTestStore(t, filepath.Join(t.TempDir(), "dst.db"), nil)
	if _, err := dst.Create(testSub(t, "B82002", "https://x.example/hook", base+"&Patient.identifier="+nhsA+"&MessageHeader.event=vaccinations-1", StatusActive), "a", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := dst.Restore(bytes.NewReader(buf.Bytes()))
	if err != nil || got != seq {
		t.Fatalf("restore seq %d err %v", got, err)
	}
	for _, q := range []Query{{}, {Owner: "A81001"}, {Owner: "B82002"}, {Status: StatusOff}, {Endpoint: "https://h2.example/hook"}} {
		want, _, _ := src.List(q)
		have, _, _ := dst.List(q)
		if !reflect.DeepEqual(want, have) {
			t.Errorf("List(%+v): %d vs %d subscriptions", q, len(want), len(have))
		}
	}
	h1, _ := src.History(ids[4])
	h2, _ := dst.History(ids[4])
	if len(h1) != 2 || !reflect.DeepEqual(h1, h2) {
		t.Errorf("history of a deleted subscription: %v vs %v", h1, h2)
	}
	// The restored view continues from the snapshot's sequence.
	if _, err := dst.SetStatus(ids[5], StatusOff, "op", "n"); err != nil {
		t.Fatal(err)
	}
	if s, _ := dst.Seq(); s != seq+1 {
		t.Errorf("seq after restore and write = %d, want %d", s, seq+1)
	}
	if _, err := dst.Restore(bytes.NewReader(buf.Bytes()[:len(buf.Bytes())-3])); err == nil {
		t.Error("truncated snapshot restored")
	}
	// A restore cut short leaves a view that says it is behind, so the
	// node restores again rather than serving part of it as current.
	if s, _ := dst.Seq(); s != 0 {
		t.Errorf("seq after a truncated restore = %d, want 0", s)
	}
	if _, err := dst.Restore(bytes.NewReader([]byte("nonsense nonsense nonsense"))); err == nil {
		t.Error("garbage restored")
	}
}
