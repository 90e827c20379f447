package integration

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/subscription"
	"github.com/ems-broker/ems/subscription/replog"
)

// caughtUp reads a node's "subscription view caught up" log line.
func caughtUp(t *testing.T, e *emsd) (restored, applied, ms float64) {
	t.Helper()
	for _, line := range splitLines(e.logText()) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "subscription view caught up" {
			r, _ := rec["restored_snapshot"].(float64)
			a, _ := rec["applied"].(float64)
			m, _ := rec["ms"].(float64)
			return r, a, m
		}
	}
	t.Fatalf("no catch-up line in the log:\n%s", lastLines(e.logText(), 20))
	return
}

func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}

// seedChanges builds n subscription creations in a scratch store, in the
// form the change log carries.
func seedChanges(t *testing.T, n int) []subscription.Change {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "seed.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var out []subscription.Change
	st, err := subscription.NewStore(subscription.StoreOptions{DB: db, OnChange: func(ch subscription.Change) { out = append(out, ch) }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		crit := "/Bundle?type=message&Patient.identifier=https://fhir.nhs.uk/Id/nhs-number|" + nhsNumber(1_000_000+i*3) + "&MessageHeader.event=pds-change-of-gp-1"
		c, cerr := subscription.ParseCriteria(crit)
		if cerr != nil {
			t.Fatal(cerr)
		}
		sub := subscription.Subscription{Status: subscription.StatusActive, Owner: "SUB01", CreatedBy: subscriber,
			Contacts: []subscription.Contact{{System: "url", Value: "https://directory.spineservices.nhs.uk/STU3/Organization/SUB01", Use: "work"}},
			Reason:   "seed", CriteriaText: crit, Criteria: c, Channel: subscription.Channel{Type: subscription.ChannelMessage, Endpoint: "MBB01"}}
		if _, err := st.Create(sub, "asid:"+subscriber, subscription.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestClusterNodeJoins seeds the change log with many subscriptions and
// lets new nodes join: one before any snapshot (it replays the whole log)
// and one after (it restores the snapshot). Both must serve a complete
// view when ready. EMS_CLUSTER_JOIN_SUBS sets the population (default
// 5000; the figures in docs/cluster.md are from 100000).
func TestClusterNodeJoins(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-server NATS cluster")
	}
	n := 5000
	if s := os.Getenv("EMS_CLUSTER_JOIN_SUBS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	every := max(n/2, 1)
	nc := startNATSCluster(t)
	a := startClusterEMSD(t, nc, "a", every, fastRetry)
	js := nc.connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	began := time.Now()
	changes := seedChanges(t, n)
	l, err := replog.Open(ctx, replog.Options{JS: js, Stream: "EMS_SUBSCRIPTION_LOG", Replicas: 3, Node: "seed"})
	if err != nil {
		t.Fatal(err)
	}
	imported := time.Now()
	last, err := l.Import(ctx, changes)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("seeded %d subscriptions (built in %v, appended to the R3 log in %v)", n, imported.Sub(began).Round(time.Millisecond), time.Since(imported).Round(time.Millisecond))

	t0 := time.Now()
	b := startClusterEMSD(t, nc, "b", every, fastRetry)
	replayWall := time.Since(t0)
	rb, ab, msb := caughtUp(t, b)
	if rb != 0 || uint64(ab) != last {
		t.Errorf("b: restored %v applied %v, want the whole log to %d without a snapshot", rb, ab, last)
	}

	// A write after the interval makes its writer snapshot.
	id, _, err := createSubscription(a.baseURL(), nhsNumber(42), "message", "MBB01")
	if err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore(ctx, replog.SnapshotBucket("EMS_SUBSCRIPTION_LOG"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "a snapshot covering the seeded log", func() bool {
		info, err := obs.GetInfo(ctx, replog.SnapshotObject)
		if err != nil {
			return false
		}
		seq, _ := strconv.ParseUint(info.Metadata["seq"], 10, 64)
		return seq > last
	})
	info, _ := obs.GetInfo(ctx, replog.SnapshotObject)

	t1 := time.Now()
	c := startClusterEMSD(t, nc, "c", every, fastRetry)
	restoreWall := time.Since(t1)
	rc, ac, msc := caughtUp(t, c)
	if uint64(rc) <= last || uint64(ac) < last+1 {
		t.Errorf("c: restored %v applied %v, want a snapshot past %d", rc, ac, last)
	}
	t.Logf("join with %d subscriptions: log replay %v ms (emsd ready after %v); snapshot of %d bytes restored in %v ms (emsd ready after %v)",
		n, msb, replayWall.Round(time.Millisecond), info.Size, msc, restoreWall.Round(time.Millisecond))

	// Complete views: a sample of the seeded subscriptions and the last
	// write are readable on every node.
	rnd := rand.New(rand.NewPCG(1, 2))
	for _, e := range []*emsd{a, b, c} {
		if st := readSubscription(e.baseURL(), id); st != 200 {
			eventually(t, 10*time.Second, "the latest write on "+e.baseURL(), func() bool { return readSubscription(e.baseURL(), id) == 200 })
		}
		for range 50 {
			sid := changes[rnd.IntN(len(changes))].ID
			if st := readSubscription(e.baseURL(), sid); st != 200 {
				t.Errorf("seeded %s: %d on %s", sid, st, e.baseURL())
			}
		}
	}
	st, _ := clusterStatusOf(t, c)
	t.Logf("status from c: change log at %d, nodes %+v", st.Cluster.ChangeLog.LastSeq, st.Cluster.Nodes)
	// emsctl status shows the nodes.
	out := newCtl(t, c).ok("status")
	if !contains(out, "cluster: this node c,") || !contains(out, "NODE") {
		t.Errorf("emsctl status shows no cluster section:\n%s", out)
	}
	for _, name := range []string{"a", "b", "c"} {
		if !contains(out, "\n"+name+" ") {
			t.Errorf("emsctl status lists no node %s:\n%s", name, out)
		}
	}
	t.Logf("emsctl status (cluster part):\n%s", out[strings.Index(out, "cluster:"):])
}

// TestClusterThroughput compares publish throughput through one emsd node
// and through two on the same NATS cluster, end to end into a mailbox. On
// one machine the two nodes share the same cores, so the ratio shows the
// cost of coordination, not scaling. Run with EMS_CLUSTER_BENCH=1.
func TestClusterThroughput(t *testing.T) {
	if os.Getenv("EMS_CLUSTER_BENCH") != "1" {
		t.Skip("set EMS_CLUSTER_BENCH=1")
	}
	const workers, window = 8, 8 * time.Second
	nc := startNATSCluster(t)
	a := startClusterEMSD(t, nc, "a", 10000, fastRetry)
	subscribe(t, a, patient, "", "message", "MBA01")
	js := nc.connect(t)
	inbox := func() uint64 {
		s, err := js.Stream(context.Background(), "EMS_MESH")
		if err != nil {
			return 0
		}
		info, err := s.Info(context.Background())
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}
	run := func(nodes []*emsd) (accepted int64, acceptRate, e2eRate float64) {
		before := inbox()
		var n atomic.Int64
		stop := time.Now().Add(window)
		start := time.Now()
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := w; time.Now().Before(stop); k++ {
					_, _, status, err := publishGP(t, nodes[k%len(nodes)].baseURL(), fhir.FormatXML, patient)
					if err == nil && status == http.StatusAccepted {
						n.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		pub := time.Since(start)
		eventually(t, 3*time.Minute, "every accepted event in the inbox", func() bool { return inbox()-before >= uint64(n.Load()) })
		all := time.Since(start)
		return n.Load(), float64(n.Load()) / pub.Seconds(), float64(n.Load()) / all.Seconds()
	}
	n1, acc1, e2e1 := run([]*emsd{a})
	b := startClusterEMSD(t, nc, "b", 10000, fastRetry)
	time.Sleep(2 * time.Second)
	n2, acc2, e2e2 := run([]*emsd{a, b})
	t.Logf("1 node: %d accepted, %.0f/s accepted, %.0f/s into the inbox", n1, acc1, e2e1)
	t.Logf("2 nodes: %d accepted, %.0f/s accepted, %.0f/s into the inbox (ratio %.2f accepted, %.2f end to end)", n2, acc2, e2e2, acc2/acc1, e2e2/e2e1)
}
