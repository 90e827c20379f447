package refdata

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/subscription"
)

// BenchmarkComplete measures what the fan-out pays per event for the
// demographics, on one node (bbolt, writes grouped by db.Batch) and in
// cluster mode (the KV bucket on an embedded JetStream: one read per
// event, one compare-and-set write when the event changes the record). It
// runs four goroutines, as the fan-out's four workers do:
//
//	go test -run '^$' -bench Complete -benchtime 3s ./subscription/refdata
//
// "unchanged" events are later events for a known patient (no write);
// "changed" ones move the patient between two postcodes every time.
func BenchmarkComplete(b *testing.B) {
	const patients = 1000
	var bundles [2][]*fhir.Node
	var nhs []string
	for i := range patients {
		n := scaleNHS(100*i + 1_000_000)
		nhs = append(nhs, n)
		for v, pc := range []string{"LS17 7DF", "WF14 0BQ"} {
			bundles[v] = append(bundles[v], readEvent(b, "PDS-Change-Of-Address-ems-example.xml", "9912003888", n, "LS17 7DF", pc))
		}
	}
	for _, mode := range []string{"bbolt", "kv"} {
		for _, changed := range []bool{false, true} {
			b.Run(fmt.Sprintf("store=%s/changed=%v", mode, changed), func(b *testing.B) {
				var svc *Service
				if mode == "kv" {
					svc = openClusterNode(b, startJS(b), "a", nil).svc
				} else {
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
				b.SetParallelism((4 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for i := int(lanes.Add(1)); pb.Next(); i += 8 {
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
