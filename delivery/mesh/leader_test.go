package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/delivery/internal/testnats"
)

// readLeader finds a stored message by sequence and by subject, with its
// headers, and answers jetstream.ErrMsgNotFound for what is not stored.
func TestReadLeader(t *testing.T) {
	ns := testnats.Start(t, "")
	ctx := context.Background()
	s, err := NewStore(ctx, ns.JS, StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	m := &nats.Msg{Subject: Subject("MBX01", "m1"), Header: nats.Header{}, Data: []byte("body")}
	m.Header.Set("Mex-WorkflowID", "CHANGEOFGP_1")
	ack, err := ns.JS.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		seq     uint64
		subject string
		found   bool
	}{
		{"by sequence", ack.Sequence, "", true},
		{"by subject", 0, m.Subject, true},
		{"sequence not stored", ack.Sequence + 1, "", false},
		{"subject not stored", 0, Subject("MBX01", "m2"), false},
	} {
		got, err := s.readLeader(ctx, tc.seq, tc.subject)
		switch {
		case !tc.found:
			if !errors.Is(err, jetstream.ErrMsgNotFound) {
				t.Errorf("%s: %v, want jetstream.ErrMsgNotFound", tc.name, err)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case got.Sequence != ack.Sequence || got.Subject != m.Subject || string(got.Data) != "body" ||
			got.Header.Get("Mex-WorkflowID") != "CHANGEOFGP_1" || got.Time.IsZero():
			t.Errorf("%s: got seq %d subject %s data %q header %v", tc.name, got.Sequence, got.Subject, got.Data, got.Header)
		}
	}
}

// startCluster runs three clustered JetStream servers and returns them
// and their client URLs.
func startCluster(t *testing.T) (srvs []*server.Server, urls []string) {
	t.Helper()
	// The route ports are picked before the servers listen on them, so
	// another test may take one meanwhile: start again on fresh ones.
	for range 5 {
		if srvs, urls = tryCluster(t); srvs != nil {
			return srvs, urls
		}
	}
	t.Fatal("nats cluster not ready")
	return nil, nil
}

func tryCluster(t *testing.T) (srvs []*server.Server, urls []string) {
	t.Helper()
	port := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	var routes []*url.URL
	var opts []*server.Options
	for i := range 3 {
		o := &server.Options{ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: server.RANDOM_PORT,
			JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "mesh", Host: "127.0.0.1", Port: port()}}
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", o.Cluster.Port)})
		opts = append(opts, o)
	}
	for _, o := range opts {
		o.Routes = routes
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		srvs = append(srvs, s)
	}
	stop := func() {
		for _, s := range srvs {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
	for _, s := range srvs {
		if !s.ReadyForConnections(20 * time.Second) {
			stop()
			return nil, nil
		}
		urls = append(urls, s.ClientURL())
	}
	t.Cleanup(stop)
	return srvs, urls
}

// In a cluster the index hears of a message from the stream's leader
// (through its consumer) before the replica this node reads from has
// stored it: retrieving each message the moment this node lists it must
// still find it, and it stays listed (TestClusterSharedRefdata once got a
// 404 for a message it had just listed). Each message is published through
// the leader's server; a Store on each follower's retrieves it.
func TestRetrieveAsSoonAsListedOnAFollower(t *testing.T) {
	srvs, urls := startCluster(t)
	ctx := context.Background()
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err = NewStore(ctx, testnats.Connect(t, urls[0]), StreamConfig{Replicas: 3}); err == nil || time.Now().After(deadline) {
			break // the cluster may not have a meta leader yet
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	info, err := testnats.Connect(t, urls[0]).Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	leader := info.CachedInfo().Cluster.Leader
	var pub jetstream.JetStream
	var stores []*Store // one on each follower: each index's consumer may be on any replica
	for i, srv := range srvs {
		if srv.Name() == leader {
			pub = testnats.Connect(t, urls[i])
			continue
		}
		s, err := NewStore(ctx, testnats.Connect(t, urls[i]), StreamConfig{Replicas: 3})
		if err != nil {
			t.Fatal(err)
		}
		runIndex(t, s)
		stores = append(stores, s)
	}
	const n = 100
	for i := range n {
		id := fmt.Sprintf("20261123000000%06d_A", i)
		m := &nats.Msg{Subject: Subject("MBX01", id), Header: nats.Header{}, Data: []byte("body")}
		m.Header.Set("Mex-WorkflowID", "CHANGEOFGP_1")
		if _, err := pub.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		for f, s := range stores {
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Microsecond) {
				msgs, _, err := s.List(ctx, "MBX01", "", 500, nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(msgs) > 0 && msgs[len(msgs)-1].ID == id {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("follower %d: message %d not listed after 10 s", f, i)
				}
			}
			if _, err := s.Get(ctx, "MBX01", id); err != nil {
				t.Fatalf("follower %d: retrieving message %d the moment it was listed: %v", f, i, err)
			}
			if msgs, _, err := s.List(ctx, "MBX01", "", 500, nil); err != nil || len(msgs) != i+1 {
				t.Fatalf("follower %d: after retrieving message %d: %d listed, %v; want %d", f, i, len(msgs), err, i+1)
			}
		}
	}
}
