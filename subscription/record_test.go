package subscription

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// encodeJSONRecord is what schema 1 wrote, kept here to build old files.
func encodeJSONRecord(t testing.TB, sub *Subscription) []byte {
	t.Helper()
	raw, err := json.Marshal(sub)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{recordJSON}, raw...)
}

func recordCases(t testing.TB) map[string]*Subscription {
	created := time.Date(2026, 11, 22, 21, 16, 59, 289965755, time.UTC)
	explicit := testSub(t, "RR8", "MBX001", critGP, StatusActive)
	explicit.ID, explicit.VersionID, explicit.Created, explicit.LastUpdated, explicit.CreatedBy = "01a2051e92197ec3bee63bef687fddd5", 3, created, created.Add(time.Hour), "200000000118"
	generic := testSub(t, "X26", "https://hook.example/a?b=c", critCountry+"&tag=a|b", StatusRequested)
	generic.ID, generic.VersionID, generic.Created, generic.LastUpdated = "g1", 1, created, created
	generic.Channel = Channel{Type: ChannelRestHook, Endpoint: "https://hook.example/a?b=c", Payload: "application/fhir+json",
		Headers: []string{"Authorization: Bearer x", "X-Ünïcode: ✓"}}
	generic.Contacts = append(generic.Contacts, Contact{System: "email", Value: "a@b.example"})
	generic.End, generic.EndText = time.Date(2030, 1, 2, 3, 4, 5, 6, time.FixedZone("", 3600)), "2030-01-02T03:04:05.000000006+01:00"
	ages := generic
	ages.ID, ages.Criteria.HasAgeLT, ages.Criteria.AgeLT, ages.Criteria.HasAgeGT, ages.Criteria.AgeGT = "ages", true, 19, true, 2
	ages.Criteria.Registration, ages.Criteria.ServiceType = UnregisteredOnly, "svc"
	ages.End, ages.EndText = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), "9999-12-31T23:59:59Z"
	empty := explicit
	empty.ID, empty.Contacts, empty.Criteria.Events, empty.Channel.Headers = "empty", []Contact{}, []string{}, []string{}
	none := explicit
	none.ID, none.Contacts, none.Criteria.Events, none.Reason, none.CreatedBy = "none", nil, nil, "", ""
	before := explicit
	before.ID, before.End = "before", time.Date(1600, 2, 29, 12, 0, 0, 0, time.FixedZone("", -5*3600-30*60))
	return map[string]*Subscription{"explicit": &explicit, "generic": &generic, "ages": &ages, "empty": &empty, "none": &none, "before-1678": &before}
}

// TestRecordEncoding: the binary record gives back every field the JSON
// record did, byte for byte in JSON, and is much smaller.
func TestRecordEncoding(t *testing.T) {
	for name, sub := range recordCases(t) {
		t.Run(name, func(t *testing.T) {
			raw, err := encodeSubscription(sub)
			if err != nil {
				t.Fatal(err)
			}
			if raw[0] != recordBinary {
				t.Fatalf("record starts %d", raw[0])
			}
			got, err := decodeSubscription(raw)
			if err != nil {
				t.Fatal(err)
			}
			old, err := decodeSubscription(encodeJSONRecord(t, sub))
			if err != nil {
				t.Fatal(err)
			}
			want, _ := json.Marshal(old)
			if gotJSON, _ := json.Marshal(got); !bytes.Equal(gotJSON, want) {
				t.Fatalf("binary record reads back as\n%s\nthe JSON record as\n%s", gotJSON, want)
			}
			if !got.End.Equal(sub.End) || !got.Created.Equal(sub.Created) || !got.LastUpdated.Equal(sub.LastUpdated) {
				t.Fatalf("times %v %v %v, want %v %v %v", got.End, got.Created, got.LastUpdated, sub.End, sub.Created, sub.LastUpdated)
			}
			if (got.Contacts == nil) != (sub.Contacts == nil) || (got.Criteria.Events == nil) != (sub.Criteria.Events == nil) ||
				(got.Channel.Headers == nil) != (sub.Channel.Headers == nil) {
				t.Fatal("nil and empty lists not kept apart")
			}
			if sub.End.Location() == time.UTC && !reflect.DeepEqual(got, sub) {
				t.Fatalf("got %+v\nwant %+v", got, sub)
			}
			if j := encodeJSONRecord(t, sub); len(raw) > len(j)*2/3 {
				t.Errorf("binary record %d bytes, JSON %d", len(raw), len(j))
			}
		})
	}
}

// TestRecordDecodeCorrupt: every truncation, a trailing byte and a few
// flipped bytes are refused, never a panic or a silently short record.
func TestRecordDecodeCorrupt(t *testing.T) {
	for name, sub := range recordCases(t) {
		raw, _ := encodeSubscription(sub)
		for n := 0; n < len(raw); n++ {
			if _, err := decodeSubscription(raw[:n]); err == nil {
				t.Fatalf("%s: a record cut to %d of %d bytes decoded", name, n, len(raw))
			}
		}
		if _, err := decodeSubscription(append(raw[:len(raw):len(raw)], 0)); err == nil {
			t.Fatalf("%s: a trailing byte was accepted", name)
		}
		r := rand.New(rand.NewPCG(1, uint64(len(raw))))
		for range 200 {
			c := bytes.Clone(raw)
			c[1+r.IntN(len(c)-1)] ^= byte(1 + r.IntN(255))
			_, _ = decodeSubscription(c) // must not panic
		}
	}
	if _, err := decodeSubscription([]byte{9, 1, 2}); err == nil {
		t.Fatal("an unknown encoding was accepted")
	}
}

// TestRecordDecodeRefusesUnservableTimes: a time RFC 3339 cannot carry
// (a year past 9999, a zone a day off UTC) marks a record this store did
// not write; decoding it would only fail later, when served as JSON.
func TestRecordDecodeRefusesUnservableTimes(t *testing.T) {
	for name, end := range map[string]time.Time{
		"year 10000":     time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		"year -1":        time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		"zone +24:00":    time.Date(2030, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600)),
		"zone -25:00":    time.Date(2030, 1, 1, 0, 0, 0, 0, time.FixedZone("", -25*3600)),
		"year 9999 late": time.Date(9999, 12, 31, 23, 0, 0, 0, time.FixedZone("", -3600)),
	} {
		sub := recordCases(t)["generic"]
		sub.End = end
		raw, err := encodeSubscription(sub)
		if err != nil {
			t.Fatal(err)
		}
		_, err = decodeSubscription(raw)
		if name == "year 9999 late" {
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			continue
		}
		if err == nil {
			t.Fatalf("%s: decoded", name)
		}
	}
}

// TestStoreMigratesSchema1: a schema-1 file (JSON records) opens under
// schema 2 without a rewrite pass, reads and searches exactly as before,
// and each record is rewritten in the binary encoding when it changes.
func TestStoreMigratesSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	s, db := openTestStore(t, path, nil)
	r := rand.New(rand.NewPCG(5, 5))
	model := map[string]*Subscription{}
	for i := 0; i < 40; i++ {
		sub, err := s.Create(testSub(t, propOwners[r.IntN(3)], propEPs[r.IntN(3)], randomCriteria(r), []Status{StatusActive, StatusRequested}[r.IntN(2)]), "x", CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		model[sub.ID] = sub
	}
	// Turn the file into what schema 1 wrote: JSON records, version 1.
	err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSubs)
		for id, sub := range model {
			if err := b.Put([]byte(id), encodeJSONRecord(t, sub)); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, u64(1))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, db = openTestStore(t, path, nil)
	defer db.Close()
	encodingOf := func(id string) byte {
		var e byte
		_ = db.View(func(tx *bolt.Tx) error { e = tx.Bucket(bucketSubs).Get([]byte(id))[0]; return nil })
		return e
	}
	_ = db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keySchema); !bytes.Equal(v, u64(SchemaVersion)) {
			t.Fatalf("schema %x after open", v)
		}
		return nil
	})
	for id, sub := range model {
		got, err := s.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if gj, wj := mustJSON(t, got), mustJSON(t, sub); gj != wj {
			t.Fatalf("schema-1 record reads as %s, want %s", gj, wj)
		}
		if encodingOf(id) != recordJSON {
			t.Fatal("open rewrote a record")
		}
	}
	checkStore(t, s, db, model)
	for id := range model {
		next, err := s.SetStatus(id, StatusOff, "op", "test")
		if err != nil {
			t.Fatal(err)
		}
		model[id] = next
		if encodingOf(id) != recordBinary {
			t.Fatal("a changed record was not rewritten in the binary encoding")
		}
		break
	}
	checkStore(t, s, db, model)
	if err := s.RebuildIndexes(); err != nil {
		t.Fatal(err)
	}
	checkStore(t, s, db, model)
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzDecodeRecord: arbitrary bytes never panic the decoder, and what
// decodes re-encodes to a record that decodes the same.
func FuzzDecodeRecord(f *testing.F) {
	for _, sub := range recordCases(f) {
		raw, _ := encodeSubscription(sub)
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) == 0 || raw[0] != recordBinary {
			return
		}
		sub, err := decodeSubscription(raw)
		if err != nil {
			return
		}
		again, err := encodeSubscription(sub)
		if err != nil {
			t.Fatal(err)
		}
		sub2, err := decodeSubscription(again)
		if err != nil {
			t.Fatal(err)
		}
		if mustJSON(t, sub) != mustJSON(t, sub2) {
			t.Fatalf("%s\n%s", mustJSON(t, sub), mustJSON(t, sub2))
		}
	})
}

// TestStoreOpenDoesNotWrite: opening a file already at SchemaVersion
// commits nothing, so no fsync sits on emsd's start-up path.
func TestStoreOpenDoesNotWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.db")
	_, db := openTestStore(t, path, nil)
	db.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	txid := func() (id int) {
		_ = db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
		return id
	}
	before := txid()
	if _, err := NewStore(StoreOptions{DB: db}); err != nil {
		t.Fatal(err)
	}
	if after := txid(); after != before {
		t.Fatalf("opening a current store committed %d transactions", after-before)
	}
}
