package refdata

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/subscription"
)

// BenchmarkComplete measures what the fan-out pays per event for the
// demographics, on one node (bbolt, writes group-committed) and in
// cluster mode (the KV bucket on an embedded JetStream: one read per
// event, one compare-and-set write when the event changes the record),
// with as many goroutines as fan-out workers (4, and the default 32):
//
//	go test -run '^$' -bench Complete -benchtime 3s ./subscription/refdata
//
// "unchanged" events are later events for a known patient (no write);
// "changed" ones move the patient between two postcodes every time.
func BenchmarkComplete(b *testing.B) {
	const patients = 1024
	var bundles [2][]*fhir.Node
	var nhs []string
	for i := range patients {
		n := scaleNHS(100*i + 1_000_000)
		nhs = append(nhs, n)
		for v, pc := range []string{"LS17 7DF", "WF14 0BQ"} {
			bundles[v] = append(bundles[v], readEvent(b, "PDS-Change-Of-Address-ems-example.xml", "9912003888", n, "LS17 7DF", pc))
		}
	}
	for _, mode := range []string{"bbolt", "kv", "kv-r3"} {
		for _, bc := range []struct {
			workers int
			changed bool
		}{{4, false}, {4, true}, {32, false}, {32, true}} {
			workers, changed := bc.workers, bc.changed
			b.Run(fmt.Sprintf("store=%s/workers=%d/changed=%v", mode, workers, changed), func(b *testing.B) {
				var svc *Service
				switch mode {
				case "kv":
					svc = openClusterNode(b, startJS(b), "a", nil).svc
				case "kv-r3":
					svc = openClusterNodeJS(b, startJSCluster(b), "a", nil, 3).svc
				default:
					var err error
					if svc, err = New(Options{DB: openDB(b), Logger: quietLogger()}); err != nil {
						b.Fatal(err)
					}
				}
				importFile(b, svc.Store(), NSPL, "nspl-2025-11.csv")
				ctx := context.Background()
				for i := range patients { // every patient known, at postcode 0
					if _, err := svc.Complete(ctx, subscription.EventFacts{EventCode: "pds-change-of-address-1", NHSNumber: nhs[i]}, bundles[0][i]); err != nil {
						b.Fatal(err)
					}
				}
				// Each goroutine takes its own patients, as the fan-out's
				// workers do (events of one NHS number go to one worker).
				var lanes atomic.Int64
				b.SetParallelism((workers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for i := int(lanes.Add(1)); pb.Next(); i += 64 {
						p := i % patients
						v, code := 0, "vaccinations-1"
						if changed {
							v, code = (i/patients+1)%2, "pds-change-of-address-1"
						}
						if _, err := svc.Complete(ctx, subscription.EventFacts{EventCode: code, NHSNumber: nhs[p]}, bundles[v][p]); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// startJSCluster runs three clustered JetStream servers on loopback, as
// the cluster mode's external NATS, and connects to all three.
func startJSCluster(b *testing.B) jetstream.JetStream {
	b.Helper()
	port := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	var routes, urls []string
	var opts []*server.Options
	for i := range 3 {
		o := &server.Options{ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: port(),
			JetStream: true, StoreDir: b.TempDir(), NoSigs: true, NoLog: true, MaxPayload: 8 << 20,
			Cluster: server.ClusterOpts{Name: "bench", Host: "127.0.0.1", Port: port()}}
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.Cluster.Port))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
		opts = append(opts, o)
	}
	for _, o := range opts {
		o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		s, err := server.NewServer(o)
		if err != nil {
			b.Fatal(err)
		}
		go s.Start()
		b.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		if !s.ReadyForConnections(20 * time.Second) {
			b.Fatal("nats not ready")
		}
	}
	nc, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	// Wait for the meta leader: until then no bucket can be created.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "PROBE", Replicas: 3})
		cancel()
		if err == nil {
			return js
		}
		if time.Now().After(deadline) {
			b.Fatalf("JetStream cluster not ready: %v", err)
		}
	}
}
