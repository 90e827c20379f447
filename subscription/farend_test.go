package subscription

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// indexLimit is the last instant int64 Unix nanoseconds can hold.
var indexLimit = time.Unix(0, math.MaxInt64).UTC()

// farEndCases are ends either side of the int64-nanosecond limit, each with
// the instant matching and expiry must treat as its end.
var farEndCases = []struct {
	name           string
	end, effective time.Time
}{
	{"2100", time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)},
	{"2262 before the limit", time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)},
	{"the limit", indexLimit, indexLimit},
	{"1ns past the limit", indexLimit.Add(1), indexLimit},
	{"2263", time.Date(2263, 1, 1, 0, 0, 0, 0, time.UTC), indexLimit},
	{"2300 offset", time.Date(2300, 1, 1, 0, 0, 0, 0, time.FixedZone("", 3600)), indexLimit},
	{"2600", time.Date(2600, 1, 1, 0, 0, 0, 0, time.UTC), indexLimit},
	{"9999", time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), indexLimit},
}

// TestFarEnds: a subscription ending at any instant a client can send
// matches until its effective end (its own end, or the index limit for a
// later one) and is turned off by the sweep then, not before, through both
// index readers; the stored end stays what was sent.
func TestFarEnds(t *testing.T) {
	now := time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)
	for _, tc := range farEndCases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "f.db")
			s, db := openTestStore(t, path, func() time.Time { return now })
			following, err := NewMemIndex(s) // follows the creates as changes
			if err != nil {
				t.Fatal(err)
			}
			explicit := testSub(t, "RR8", "MBX1", critGP, StatusActive)
			generic := testSub(t, "X26", "MBX2", critCountry, StatusActive)
			var ids []string
			for _, sub := range []Subscription{explicit, generic} {
				sub.End, sub.EndText = tc.end, tc.end.Format(time.RFC3339Nano)
				got, err := s.Create(sub, "t", CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, got.ID)
			}
			slices.Sort(ids)
			db.Close()
			s, db = openTestStore(t, path, func() time.Time { return now })
			defer db.Close()
			loaded, err := NewMemIndex(s) // reads the entries from the file
			if err != nil {
				t.Fatal(err)
			}
			readers := map[string]IndexReader{"bbolt": s, "memory (loaded)": loaded, "memory (followed)": following}
			event := EventFacts{EventCode: "pds-change-of-address-1", NHSNumber: nhsB, Country: []string{"E92000001"}}
			gp := event
			gp.EventCode = "pds-change-of-gp-1"
			// matched is how many of the two subscriptions match at at,
			// the same through every reader.
			matched := func(at time.Time) int {
				t.Helper()
				counts := map[string]int{}
				for name, idx := range readers {
					var got []string
					for _, f := range []EventFacts{event, gp} {
						ms, err := MatchFacts(f, idx, at)
						if err != nil {
							t.Fatal(err)
						}
						for _, m := range ms {
							got = append(got, m.SubscriptionID)
						}
					}
					slices.Sort(got)
					if len(got) != 0 && !slices.Equal(got, ids) {
						t.Fatalf("%s index at %s matched %v, want none or %v", name, at, got, ids)
					}
					counts[name] = len(got)
				}
				for _, n := range counts {
					if n != counts["bbolt"] {
						t.Fatalf("at %s the readers disagree: %v", at, counts)
					}
				}
				return counts["bbolt"]
			}
			if n := matched(now); n != 2 {
				t.Fatalf("at %s %d of 2 matched", now, n)
			}
			if n := matched(tc.effective.Add(-1)); n != 2 {
				t.Fatalf("1ns before %s %d of 2 matched", tc.effective, n)
			}
			if n := matched(tc.effective); n != 0 {
				t.Fatalf("at %s %d matched", tc.effective, n)
			}
			for _, at := range []time.Time{now, tc.effective.Add(-1)} {
				if due, err := s.ExpireDue(at, "system:expiry"); err != nil || len(due) != 0 {
					t.Fatalf("ExpireDue(%s) = %v, %v", at, due, err)
				}
			}
			due, err := s.ExpireDue(tc.effective, "system:expiry")
			slices.Sort(due)
			if err != nil || !slices.Equal(due, ids) {
				t.Fatalf("ExpireDue(%s) = %v, %v; want %v", tc.effective, due, err, ids)
			}
			for _, id := range ids {
				sub, err := s.Get(id)
				if err != nil {
					t.Fatal(err)
				}
				if sub.Status != StatusOff || !sub.End.Equal(tc.end) || sub.EndText != tc.end.Format(time.RFC3339Nano) {
					t.Fatalf("after expiry %s is %s ending %s (%q), want off ending %s", id, sub.Status, sub.End, sub.EndText, tc.end)
				}
			}
		})
	}
}

// legacyMatchEntry is encodeMatchEntry as schema 2 wrote it, with the end's
// UnixNano unclamped; kept here to build old files.
func legacyMatchEntry(t testing.TB, e MatchEntry, end time.Time) []byte {
	t.Helper()
	e.End = time.Time{}
	b := encodeMatchEntry(e)
	// The varint end follows the version, kind, registration, flags and
	// the two uvarint ages; without an end it is the single byte 0.
	at := 4
	for range 2 {
		_, n := binary.Uvarint(b[at:])
		at += n
	}
	if b[at] != 0 {
		t.Fatalf("no zero end at %d in %x", at, b)
	}
	var v int64
	if !end.IsZero() {
		v = end.UnixNano()
	}
	return slices.Concat(b[:at], binary.AppendVarint(nil, v), b[at+1:])
}

// TestStoreMigratesSchema2FarEnds: a schema-2 file whose far ends were
// indexed with the wrapped UnixNano is repaired on open: afterwards every
// index holds exactly what the records imply, the far ends match and
// expire at the index limit, and the records are untouched.
func TestStoreMigratesSchema2FarEnds(t *testing.T) {
	now := time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	path := filepath.Join(t.TempDir(), "s2.db")
	s, db := openTestStore(t, path, clock)
	r := rand.New(rand.NewPCG(2, 3))
	model := map[string]*Subscription{}
	statuses := []Status{StatusActive, StatusActive, StatusRequested, StatusOff, StatusError}
	for i := 0; i < 80; i++ {
		sub := testSub(t, propOwners[r.IntN(3)], propEPs[r.IntN(3)], randomCriteria(r), statuses[r.IntN(len(statuses))])
		if c := farEndCases[r.IntN(len(farEndCases))]; i%9 != 0 {
			sub.End, sub.EndText = c.end, c.end.Format(time.RFC3339Nano)
		}
		got, err := s.Create(sub, "t", CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		model[got.ID] = got
	}
	records := map[string]string{}
	// Turn the file into what schema 2 wrote: wrapped ends, version 2.
	rewritten := 0
	err := db.Update(func(tx *bolt.Tx) error {
		for id, sub := range model {
			records[id] = string(tx.Bucket(bucketSubs).Get([]byte(id)))
			if indexEnd(sub.End).Equal(sub.End) {
				continue
			}
			for _, e := range indexKeys(sub) {
				switch {
				case bytes.Equal(e.bucket, bucketEnd):
					if err := tx.Bucket(bucketEnd).Delete(e.key); err != nil {
						return err
					}
					legacy := append(u64(uint64(sub.End.UnixNano())), id...)
					if err := tx.Bucket(bucketEnd).Put(legacy, []byte{}); err != nil {
						return err
					}
					rewritten++
				case e.value != nil:
					if err := tx.Bucket(e.bucket).Put(e.key, legacyMatchEntry(t, entryOf(sub), sub.End)); err != nil {
						return err
					}
				}
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, u64(2))
	})
	if err != nil {
		t.Fatal(err)
	}
	if rewritten < 10 {
		t.Fatalf("only %d far ends in the end index: the test proves little", rewritten)
	}
	db.Close()

	s, db = openTestStore(t, path, clock)
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keySchema); !bytes.Equal(v, u64(SchemaVersion)) {
			t.Fatalf("schema %x after open", v)
		}
		for id, raw := range records {
			if got := tx.Bucket(bucketSubs).Get([]byte(id)); string(got) != raw {
				t.Fatalf("the migration rewrote record %s", id)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkStore(t, s, db, model)
	// At now every active subscription matches and none is due; at the
	// index limit every one with an end is.
	if due, err := s.ExpireDue(now, "system:expiry"); err != nil || len(due) != 0 {
		t.Fatalf("ExpireDue(now) after migration = %v, %v", due, err)
	}
	var wantDue []string
	for id, sub := range model {
		if sub.Status != StatusOff && !sub.End.IsZero() {
			wantDue = append(wantDue, id)
		}
	}
	due, err := s.ExpireDue(indexLimit, "system:expiry")
	slices.Sort(due)
	slices.Sort(wantDue)
	if err != nil || !slices.Equal(due, wantDue) {
		t.Fatalf("ExpireDue(limit) = %d ids, %v; want %d", len(due), err, len(wantDue))
	}
}
