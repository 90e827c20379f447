package replog

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/subscription"
)

func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), DontListen: true, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// node is one emsd's subscription view: its own bbolt, following the log.
type node struct {
	log   *Log
	store *subscription.Store
	db    *bolt.DB
	ready Ready
}

func startNode(t *testing.T, ctx context.Context, js jetstream.JetStream, name, path string, every int) *node {
	t.Helper()
	l, err := Open(ctx, Options{JS: js, Stream: "EMS_SUBSCRIPTION_LOG", Node: name, SnapshotEvery: every})
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st, err := subscription.NewStore(subscription.StoreOptions{DB: db, Committer: l})
	if err != nil {
		t.Fatal(err)
	}
	r, err := l.Start(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	return &node{log: l, store: st, db: db, ready: r}
}

func sub(i int, owner string) subscription.Subscription {
	nhs := validNHS(i)
	crit := "/Bundle?type=message&Patient.identifier=" + nhs + "&MessageHeader.event=pds-change-of-address-1"
	c, err := subscription.ParseCriteria(crit)
	if err != nil {
		panic(err)
	}
	return subscription.Subscription{Status: subscription.StatusActive, Owner: owner, Reason: "t", CriteriaText: crit, Criteria: c,
		Channel: subscription.Channel{Type: subscription.ChannelMessage, Endpoint: "MBX" + owner + strconv.Itoa(i)}}
}

func validNHS(n int) string {
	for ; ; n++ {
		s := fmt.Sprintf("%09d", n%1_000_000_000)
		sum := 0
		for i := 0; i < 9; i++ {
			sum += int(s[i]-'0') * (10 - i)
		}
		check := 11 - sum%11
		if check == 11 {
			check = 0
		}
		if check != 10 {
			return s + strconv.Itoa(check)
		}
	}
}

// Two nodes write concurrently, each reads its own writes at once, and
// both views end equal; duplicates are refused across nodes.
func TestTwoNodesConverge(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js := startJetStream(t)
	dir := t.TempDir()
	a := startNode(t, ctx, js, "a", filepath.Join(dir, "a.db"), 0)
	b := startNode(t, ctx, js, "b", filepath.Join(dir, "b.db"), 0)

	var mu sync.Mutex
	acked := map[string]bool{}
	var wg sync.WaitGroup
	for w, n := range []*node{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				s, err := n.store.Create(sub(w*1000+i, "A8100"+strconv.Itoa(w)), "t", subscription.CreateOptions{RejectDuplicate: true})
				if err != nil {
					t.Error(err)
					return
				}
				// Read-your-writes: the writer's view has it on return.
				if _, err := n.store.Get(s.ID); err != nil {
					t.Errorf("own write %s not readable: %v", s.ID, err)
				}
				mu.Lock()
				acked[s.ID] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// The same subscription on the other node is a duplicate, though it
	// was never written there.
	var dup *subscription.DuplicateError
	if _, err := b.store.Create(sub(0, "A81000"), "t", subscription.CreateOptions{RejectDuplicate: true}); !errors.As(err, &dup) {
		t.Errorf("duplicate across nodes: err = %v", err)
	}
	last, _, _ := a.log.Last(ctx)
	for _, n := range []*node{a, b} {
		if err := n.log.WaitApplied(ctx, last); err != nil {
			t.Fatal(err)
		}
		for id := range acked {
			if _, err := n.store.Get(id); err != nil {
				t.Errorf("acknowledged %s missing: %v", id, err)
			}
		}
		if c, _ := n.store.Count(); c != 160 {
			t.Errorf("count = %d, want 160", c)
		}
	}
}

// A node restarted resumes from its applied sequence; a new node restores
// the snapshot and reads only the log after it; the log is purged.
func TestSnapshotJoinAndResume(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js := startJetStream(t)
	dir := t.TempDir()
	a := startNode(t, ctx, js, "a", filepath.Join(dir, "a.db"), 50)
	for i := range 120 {
		if _, err := a.store.Create(sub(i, "A81001"), "t", subscription.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Snapshots at 50 and 100 are taken in the background; take the last
	// one explicitly so the test does not race them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		seq, err := a.log.TakeSnapshot(ctx)
		if err == nil && seq == 120 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot: %d %v", seq, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, first, _ := a.log.Last(ctx)
	if first != 71 {
		t.Errorf("log starts at %d after the snapshot at 120, want 71 (one interval kept)", first)
	}
	for i := 120; i < 130; i++ {
		if _, err := a.store.Create(sub(i, "A81001"), "t", subscription.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cctx, stopC := context.WithCancel(ctx)
	c := startNode(t, cctx, js, "c", filepath.Join(dir, "c.db"), 50)
	if c.ready.Restored != 120 || c.ready.Applied != 130 {
		t.Errorf("join: %+v, want snapshot 120 then log to 130", c.ready)
	}
	if n, _ := c.store.Count(); n != 130 {
		t.Errorf("joined count = %d", n)
	}
	// Restart: stop c, write more on a, reopen c: it resumes from its
	// applied sequence without a restore.
	stopC()
	time.Sleep(50 * time.Millisecond)
	if err := c.db.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 130; i < 140; i++ {
		if _, err := a.store.Create(sub(i, "A81001"), "t", subscription.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c2 := startNode(t, ctx, js, "c", filepath.Join(dir, "c.db"), 50)
	if c2.ready.Restored != 0 || c2.ready.Applied != 140 {
		t.Errorf("resume: %+v, want no restore and the log to 140", c2.ready)
	}
	if n, _ := c2.store.Count(); n != 140 {
		t.Errorf("resumed count = %d", n)
	}
}

// Import appends a population built elsewhere; a node joining afterwards
// sees all of it, and a write after it snapshots because the interval
// has passed.
func TestImportThenSnapshotOnNextWrite(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js := startJetStream(t)
	dir := t.TempDir()
	var changes []subscription.Change
	seedDB, err := bolt.Open(filepath.Join(dir, "seed.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer seedDB.Close()
	seed, err := subscription.NewStore(subscription.StoreOptions{DB: seedDB, OnChange: func(ch subscription.Change) { changes = append(changes, ch) }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3000 {
		if _, err := seed.Create(sub(i, "A81001"), "seed", subscription.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	a := startNode(t, ctx, js, "a", filepath.Join(dir, "a.db"), 1000)
	last, err := a.log.Import(ctx, changes)
	if err != nil || last != 3000 {
		t.Fatalf("import: last %d err %v", last, err)
	}
	if _, err := a.store.Create(sub(5000, "A81001"), "t", subscription.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
		}
	}
	eventually("snapshot after the import", func() bool { return a.log.lastSnap.Load() == 3001 })
	b := startNode(t, ctx, js, "b", filepath.Join(dir, "b.db"), 1000)
	if b.ready.Restored != 3001 || b.ready.Applied != 3001 {
		t.Errorf("join after import: %+v", b.ready)
	}
	if n, _ := b.store.Count(); n != 3001 {
		t.Errorf("count = %d", n)
	}
	if _, err := b.store.Get(changes[1234].ID); err != nil {
		t.Error(err)
	}
}
