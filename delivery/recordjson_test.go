package delivery

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// TestRecordJSONMatchesEncodingJSON: the log's record encoder writes what
// json.Marshal writes, for generated records with awkward strings, times
// and latencies, and the records the log really writes.
func TestRecordJSONMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	strs := []string{"", "MBX01", "9912003888", "a<b>&c", "quote\"back\\slash", "tab\tnl\n", "\x00\x1f", "é ünïcode ✓",
		"\u2028\u2029", "bad\xffutf8", "20261122100000000001_0a1b2c3d4e", "stored in the mailbox", strings.Repeat("x", 300)}
	plain := []string{"", "MBX01", "9912003888", "é ünïcode ✓", "stored in the mailbox"}
	pick := func() string {
		if rng.IntN(50) == 0 {
			return strs[rng.IntN(len(strs))]
		}
		return plain[rng.IntN(len(plain))]
	}
	zones := []*time.Location{time.UTC, time.FixedZone("x", 5*3600+30*60), time.FixedZone("s", -(3*3600 + 17)),
		time.FixedZone("far", 25*3600)}
	times := func() time.Time {
		switch rng.IntN(40) {
		case 0:
			return time.Time{}
		case 1:
			return time.Date(10000+rng.IntN(5), 1, 1, 0, 0, 0, 0, time.UTC)
		case 2:
			return time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)
		}
		return time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).In(zones[rng.IntN(len(zones))])
	}
	floats := []float64{0, 1.5, 12.345678, 1e-7, 1e21, 123456789, -3, math.Inf(1), math.NaN(), 5e-324}
	var recs []*Record
	for range 3000 {
		r := &Record{ID: pick(), EventID: pick(), EventCode: pick(), NHSNumber: pick(), Channel: pick(), Endpoint: pick(),
			State: pick(), Generation: rng.IntN(3), AttemptCount: rng.IntN(5) - 1, FirstAttempt: times(), NextAttempt: times(),
			LastStatus: rng.IntN(2) * 503, LastError: pick(), Reason: pick(), Created: times(), Updated: times(),
			TotalAttempts: rng.IntN(9)}
		if rng.IntN(4) > 0 {
			r.Matches = []MatchInfo{}
			for range rng.IntN(3) {
				r.Matches = append(r.Matches, MatchInfo{Subscription: pick(), Kind: pick(), Rule: pick(), Organisation: pick(), Tag: pick()})
			}
		}
		if rng.IntN(4) > 0 {
			r.Attempts = []Attempt{}
			for range rng.IntN(3) {
				r.Attempts = append(r.Attempts, Attempt{At: times(), Generation: rng.IntN(2), Status: rng.IntN(2) * 200,
					Error: pick(), Outcome: pick(), LatencyMs: floats[rng.IntN(len(floats))]})
			}
		}
		recs = append(recs, r)
	}
	now := time.Now()
	recs = append(recs, &Record{ID: "20261122100000000001_0a1b2c3d4e", EventID: "33333333-3333-4333-8333-333333333333",
		EventCode: "pds-change-of-gp-1", NHSNumber: nhsA, Channel: "message", Endpoint: "MBX01",
		Matches: []MatchInfo{{Subscription: "s1", Kind: "patient", Tag: "x"}}, State: StateDelivered, AttemptCount: 1,
		TotalAttempts: 1, FirstAttempt: now, Created: now, Updated: now, Reason: "stored in the mailbox",
		Attempts: []Attempt{{At: now, Outcome: "stored"}}}, &Record{})
	fast := 0
	for _, r := range recs {
		want, wantErr := json.Marshal(r)
		got, err := appendRecordJSON([]byte("prefix"), r)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("%+v: error %v, json.Marshal's %v", r, err, wantErr)
		}
		if err != nil {
			if string(got) != "prefix" {
				t.Fatalf("failed encode left %q", got)
			}
			continue
		}
		if string(got) != "prefix"+string(want) {
			t.Fatalf("%+v:\n got %s\nwant %s", r, got[len("prefix"):], want)
		}
		if _, ok := appendRecordFast(nil, r); ok {
			fast++
		}
	}
	t.Logf("%d of %d records encoded without encoding/json", fast, len(recs))
	if fast < len(recs)/20 {
		t.Errorf("only %d of %d records took the fast path", fast, len(recs))
	}
}

// BenchmarkRecordJSON is the encoding of a mailbox delivery's log record:
// encoding/json against the log's encoder.
func BenchmarkRecordJSON(b *testing.B) {
	now := time.Date(2026, 11, 23, 1, 0, 0, 123456789, time.UTC)
	r := &Record{ID: "20261122100000000001_0a1b2c3d4e", EventID: "33333333-3333-4333-8333-333333333333",
		EventCode: "pds-change-of-gp-1", NHSNumber: nhsA, Channel: "message", Endpoint: "MBX01",
		Matches: []MatchInfo{{Subscription: "s1", Kind: "patient", Tag: "x"}}, State: StateDelivered, AttemptCount: 1,
		TotalAttempts: 1, FirstAttempt: now, Created: now, Updated: now, Reason: "stored in the mailbox",
		Attempts: []Attempt{{At: now, Outcome: "stored"}}}
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("log", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := appendRecordJSON(nil, r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
