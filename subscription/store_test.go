package subscription

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// validNHS returns a Mod-11-valid NHS number derived from n.
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

func openTestStore(t testing.TB, path string, now func() time.Time) (*Store, *bolt.DB) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(StoreOptions{DB: db, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return s, db
}

// testSub builds a valid subscription from a criteria string.
func testSub(t testing.TB, owner, endpoint, criteria string, status Status) Subscription {
	t.Helper()
	c, cerr := ParseCriteria(criteria)
	if cerr != nil {
		t.Fatalf("criteria %q: %v", criteria, cerr)
	}
	return Subscription{Status: status, Owner: owner,
		Contacts: []Contact{{System: "url", Value: odsURLPrefix + owner, Use: "work"}},
		Reason:   "test", CriteriaText: criteria, Criteria: c,
		Channel: Channel{Type: ChannelMessage, Endpoint: endpoint}}
}

var (
	propEvents = []string{"pds-change-of-gp-1", "vaccinations-1", "pds-change-of-address-1"}
	propOwners = []string{"RR8", "X26", "A81001"}
	propEPs    = []string{"MBX001", "MBX002", "MBX003"}
	propOrgs   = []string{"00L", "X2458", "E92000001"}
)

func randomCriteria(r *rand.Rand) string {
	ev := propEvents[r.IntN(len(propEvents))]
	if r.IntN(2) == 0 {
		c := base + "&Patient.identifier=" + validNHS(r.IntN(4)) + "&MessageHeader.event=" + ev
		if r.IntN(3) == 0 {
			for _, e := range propEvents {
				if e != ev {
					c += "&MessageHeader.event=" + e
					break
				}
			}
		}
		if r.IntN(3) == 0 {
			c += "&tag=t" + strconv.Itoa(r.IntN(2))
		}
		return c
	}
	org := propOrgs[r.IntN(len(propOrgs))]
	rule := []RuleType{RulePostcodeSubICB, RuleGPSubICB, RulePostcodeLA}[r.IntN(3)]
	if org == "E92000001" {
		rule = RuleCountry
	}
	c := base + "&MessageHeader.event=" + ev + "&subscriptionRuleType=" + string(rule) + "&Organization.identifier=" + org
	if r.IntN(3) == 0 {
		c += "&Patient.age=lt" + strconv.Itoa(2+r.IntN(20))
	}
	return c
}

// TestStoreIndexesProperty applies random create/update/status/delete
// sequences to a real bbolt file and checks, after every step and after
// reopening, that every index holds exactly what a brute-force scan of the
// primary records says it should.
func TestStoreIndexesProperty(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run("seed"+strconv.FormatUint(seed, 10), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 42))
			path := filepath.Join(t.TempDir(), "subs.db")
			clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			now := func() time.Time { return clock }
			s, db := openTestStore(t, path, now)
			mem, err := NewMemIndex(s)
			if err != nil {
				t.Fatal(err)
			}
			model := map[string]*Subscription{}
			var ids []string
			steps := 300
			if testing.Short() {
				steps = 80
			}
			for step := 0; step < steps; step++ {
				clock = clock.Add(time.Minute)
				op := r.IntN(10)
				switch {
				case op < 4 || len(ids) == 0:
					sub := testSub(t, propOwners[r.IntN(3)], propEPs[r.IntN(3)], randomCriteria(r), []Status{StatusRequested, StatusActive}[r.IntN(2)])
					if r.IntN(4) == 0 {
						sub.End = clock.Add(time.Duration(r.IntN(60)) * time.Minute)
					}
					got, err := s.Create(sub, "asid:1", CreateOptions{RejectDuplicate: r.IntN(2) == 0})
					var dup *DuplicateError
					if errors.As(err, &dup) {
						if _, ok := model[dup.ExistingID]; !ok || model[dup.ExistingID].Status == StatusOff {
							t.Fatalf("duplicate of %s which is not a live subscription", dup.ExistingID)
						}
						continue
					}
					if err != nil {
						t.Fatal(err)
					}
					model[got.ID] = got
					ids = append(ids, got.ID)
				case op < 6:
					id := ids[r.IntN(len(ids))]
					crit := randomCriteria(r)
					ep := propEPs[r.IntN(3)]
					got, err := s.Update(id, 0, "asid:1", CreateOptions{}, func(sub *Subscription) error {
						c, _ := ParseCriteria(crit)
						sub.CriteriaText, sub.Criteria, sub.Channel.Endpoint = crit, c, ep
						return nil
					})
					if _, live := model[id]; !live {
						if !errors.Is(err, ErrNotFound) {
							t.Fatalf("update of deleted %s: %v", id, err)
						}
						continue
					}
					if err != nil {
						t.Fatal(err)
					}
					if got.VersionID != model[id].VersionID+1 {
						t.Fatalf("version %d after %d", got.VersionID, model[id].VersionID)
					}
					model[id] = got
				case op < 8:
					id := ids[r.IntN(len(ids))]
					to := []Status{StatusActive, StatusOff, StatusError}[r.IntN(3)]
					got, err := s.SetStatus(id, to, "operator:test", "")
					old, live := model[id]
					switch {
					case !live:
						if !errors.Is(err, ErrNotFound) {
							t.Fatalf("status of deleted %s: %v", id, err)
						}
					case old.Status != to && !CanTransition(old.Status, to):
						if !errors.Is(err, ErrTransition) {
							t.Fatalf("%s → %s: %v", old.Status, to, err)
						}
					case err != nil:
						t.Fatal(err)
					default:
						model[id] = got
					}
				case op < 9:
					expired, err := s.ExpireDue(clock, "system:expiry")
					if err != nil {
						t.Fatal(err)
					}
					for _, id := range expired {
						got, _ := s.Get(id)
						model[id] = got
					}
					for id, sub := range model {
						if sub.Status != StatusOff && sub.Ended(clock) {
							t.Fatalf("%s ended at %v but still %s", id, sub.End, sub.Status)
						}
					}
				default:
					id := ids[r.IntN(len(ids))]
					err := s.Delete(id, "asid:1")
					if _, live := model[id]; !live {
						if !errors.Is(err, ErrNotFound) {
							t.Fatalf("delete of deleted: %v", err)
						}
						continue
					}
					if err != nil {
						t.Fatal(err)
					}
					delete(model, id)
				}
				checkStore(t, s, db, model)
				checkIndexReader(t, mem, model)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			s, db = openTestStore(t, path, now)
			defer db.Close()
			checkStore(t, s, db, model)
			mem, err = NewMemIndex(s)
			if err != nil {
				t.Fatal(err)
			}
			checkIndexReader(t, mem, model)
		})
	}
}

// checkStore compares the store with the model by brute force.
func checkStore(t *testing.T, s *Store, db *bolt.DB, model map[string]*Subscription) {
	t.Helper()
	// Every index bucket holds exactly the keys the model implies.
	want := map[string]map[string]string{}
	for _, b := range indexBuckets {
		want[string(b)] = map[string]string{}
	}
	for _, sub := range model {
		for _, e := range indexKeys(sub) {
			want[string(e.bucket)][string(e.key)] = string(e.value)
		}
	}
	err := db.View(func(tx *bolt.Tx) error {
		for _, b := range indexBuckets {
			got := map[string]string{}
			tx.Bucket(b).ForEach(func(k, v []byte) error { got[string(k)] = string(v); return nil })
			if !reflect.DeepEqual(got, want[string(b)]) {
				t.Fatalf("bucket %s: %d keys, brute force says %d", b, len(got), len(want[string(b)]))
			}
		}
		if n := tx.Bucket(bucketSubs).Stats().KeyN; n != len(model) {
			t.Fatalf("%d primary records, model has %d", n, len(model))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, sub := range model {
		got, err := s.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if got.VersionID != sub.VersionID || got.Status != sub.Status || got.Criteria.Normalised() != sub.Criteria.Normalised() {
			t.Fatalf("Get(%s) = %+v, want %+v", id, got, sub)
		}
	}
	checkIndexReader(t, s, model)
	for _, q := range []Query{{Owner: "RR8"}, {Status: StatusActive}, {Endpoint: "MBX002"}, {Owner: "X26", Status: StatusRequested}, {Event: "vaccinations-1"}} {
		got, _, err := s.List(q)
		if err != nil {
			t.Fatal(err)
		}
		var gotIDs, wantIDs []string
		for _, g := range got {
			gotIDs = append(gotIDs, g.ID)
		}
		for id, sub := range model {
			if q.matches(sub) {
				wantIDs = append(wantIDs, id)
			}
		}
		sort.Strings(gotIDs)
		sort.Strings(wantIDs)
		if !reflect.DeepEqual(gotIDs, wantIDs) {
			t.Fatalf("List(%+v) = %v, brute force %v", q, gotIDs, wantIDs)
		}
	}
}

// checkIndexReader compares every lookup of an index with a brute-force
// scan of the model.
func checkIndexReader(t *testing.T, idx IndexReader, model map[string]*Subscription) {
	t.Helper()
	for _, ev := range propEvents {
		for n := 0; n < 4; n++ {
			checkCandidates(t, idx, model, ev, Lookup{Kind: Explicit, NHSNumber: validNHS(n)})
		}
		for _, org := range propOrgs {
			for _, rule := range RuleTypes {
				checkCandidates(t, idx, model, ev, Lookup{Kind: Generic, Rule: rule, Organisation: org})
			}
		}
	}
}

func checkCandidates(t *testing.T, s IndexReader, model map[string]*Subscription, ev string, l Lookup) {
	t.Helper()
	var got, want []string
	if err := s.Candidates(ev, []Lookup{l}, func(id string, e *MatchEntry) {
		if *e != entryOf(model[id]) {
			t.Fatalf("entry of %s = %+v, want %+v", id, e, entryOf(model[id]))
		}
		got = append(got, id)
	}); err != nil {
		t.Fatal(err)
	}
	for id, sub := range model {
		c := sub.Criteria
		if sub.Status != StatusActive || !c.HasEvent(ev) || c.Kind != l.Kind {
			continue
		}
		if l.Kind == Explicit && c.NHSNumber == l.NHSNumber || l.Kind == Generic && c.Rule == l.Rule && c.Organisation == l.Organisation {
			want = append(want, id)
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Candidates(%s, %+v) = %v, brute force %v", ev, l, got, want)
	}
}

func TestStoreLifecycleHistory(t *testing.T) {
	clock := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	s, db := openTestStore(t, filepath.Join(t.TempDir(), "s.db"), func() time.Time { return clock })
	defer db.Close()
	sub, err := s.Create(testSub(t, "RR8", "MBX001", base+"&Patient.identifier="+nhsA+"&MessageHeader.event=vaccinations-1", StatusRequested), "asid:100", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sub.ID) != 32 || sub.VersionID != 1 {
		t.Fatalf("id %q version %d", sub.ID, sub.VersionID)
	}
	pending, _, _ := s.List(Query{Status: StatusRequested})
	if len(pending) != 1 || pending[0].ID != sub.ID {
		t.Fatalf("pending = %v", pending)
	}
	steps := []struct {
		to      Status
		actor   string
		wantErr error
	}{
		{StatusActive, "operator:alice", nil},
		{StatusRequested, "operator:alice", ErrTransition},
		{StatusOff, "operator:bob", nil},
		{StatusError, "delivery", ErrTransition},
		{StatusActive, "operator:bob", nil},
		{StatusError, "delivery", nil},
		{StatusActive, "operator:alice", nil},
	}
	for _, st := range steps {
		clock = clock.Add(time.Hour)
		_, err := s.SetStatus(sub.ID, st.to, st.actor, "because")
		if !errors.Is(err, st.wantErr) {
			t.Fatalf("→ %s: %v, want %v", st.to, err, st.wantErr)
		}
	}
	got, _ := s.Get(sub.ID)
	if got.VersionID != 6 || got.Status != StatusActive {
		t.Fatalf("version %d status %s", got.VersionID, got.Status)
	}
	if err := s.Delete(sub.ID, "asid:100"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(sub.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	hist, err := s.History(sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, h := range hist {
		actions = append(actions, fmt.Sprintf("%d %s %s %s→%s", h.VersionID, h.Actor, h.Action, h.From, h.To))
	}
	want := []string{
		"1 asid:100 create →requested",
		"2 operator:alice status requested→active",
		"3 operator:bob status active→off",
		"4 operator:bob status off→active",
		"5 delivery status active→error",
		"6 operator:alice status error→active",
		"6 asid:100 delete active→",
	}
	if !reflect.DeepEqual(actions, want) {
		t.Fatalf("history:\n%v\nwant\n%v", actions, want)
	}
}

func TestStoreUpdateIfMatchAndDuplicates(t *testing.T) {
	s, db := openTestStore(t, filepath.Join(t.TempDir(), "s.db"), nil)
	defer db.Close()
	crit := base + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=COUNTRYCODE&Organization.identifier=E92000001"
	a, err := s.Create(testSub(t, "RR8", "MBX001", crit, StatusActive), "x", CreateOptions{RejectDuplicate: true})
	if err != nil {
		t.Fatal(err)
	}
	// Same meaning, different spelling: still a duplicate.
	respelled := "Bundle?subscriptionRuleType=COUNTRYCODE&Organization.identifier=E92000001&type=message&MessageHeader.event=pds-change-of-gp-1"
	_, err = s.Create(testSub(t, "RR8", "MBX001", respelled, StatusRequested), "x", CreateOptions{RejectDuplicate: true})
	var dup *DuplicateError
	if !errors.As(err, &dup) || dup.ExistingID != a.ID {
		t.Fatalf("want duplicate of %s, got %v", a.ID, err)
	}
	// Another endpoint or owner is not a duplicate; allow mode stores it.
	if _, err := s.Create(testSub(t, "RR8", "MBX002", crit, StatusActive), "x", CreateOptions{RejectDuplicate: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(testSub(t, "RR8", "MBX001", crit, StatusActive), "x", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// An off subscription does not block a new one.
	if _, err := s.SetStatus(a.ID, StatusOff, "op", ""); err != nil {
		t.Fatal(err)
	}
	b, err := s.Create(testSub(t, "X26", "MBX009", crit, StatusActive), "x", CreateOptions{RejectDuplicate: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(b.ID, 7, "x", CreateOptions{}, func(*Subscription) error { return nil }); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("stale If-Match: %v", err)
	}
	u, err := s.Update(b.ID, 1, "x", CreateOptions{}, func(sub *Subscription) error { sub.Reason = "new"; return nil })
	if err != nil || u.VersionID != 2 || u.Reason != "new" {
		t.Fatalf("update: %+v %v", u, err)
	}
	if _, err := s.Update(b.ID, 1, "x", CreateOptions{}, func(*Subscription) error { return nil }); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("second update with version 1: %v", err)
	}
}

func TestStoreApplyChangeLog(t *testing.T) {
	var log []Change
	leader, db1 := openTestStore(t, filepath.Join(t.TempDir(), "a.db"), nil)
	defer db1.Close()
	leader.onChange = func(c Change) { log = append(log, c) }
	r := rand.New(rand.NewPCG(9, 9))
	var ids []string
	for i := 0; i < 40; i++ {
		sub, err := leader.Create(testSub(t, "RR8", propEPs[r.IntN(3)], randomCriteria(r), StatusActive), "x", CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sub.ID)
	}
	for _, id := range ids[:10] {
		if err := leader.Delete(id, "x"); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids[10:20] {
		if _, err := leader.SetStatus(id, StatusOff, "op", ""); err != nil {
			t.Fatal(err)
		}
	}
	followerPath := filepath.Join(t.TempDir(), "b.db")
	follower, db2 := openTestStore(t, followerPath, nil)
	for _, c := range log[:30] {
		if err := follower.Apply(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := follower.Apply(log[35]); err == nil {
		t.Fatal("a gap in the log was accepted")
	}
	for _, c := range log { // replays the first 30: skipped
		if err := follower.Apply(c); err != nil {
			t.Fatal(err)
		}
	}
	model := map[string]*Subscription{}
	all, _, _ := leader.List(Query{})
	for _, sub := range all {
		model[sub.ID] = sub
	}
	checkStore(t, follower, db2, model)
	// A MemIndex fed the same records in a scrambled order (watchers may
	// see concurrent writers' changes out of order) ends in the same state.
	emptyPath := filepath.Join(t.TempDir(), "c.db")
	empty, db3 := openTestStore(t, emptyPath, nil)
	defer db3.Close()
	mem, err := NewMemIndex(empty)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range r.Perm(len(log)) {
		mem.apply(log[i])
	}
	if mem.Seq() != uint64(len(log)) {
		t.Fatalf("mem index at %d of %d", mem.Seq(), len(log))
	}
	checkIndexReader(t, mem, model)
	seq1, _ := leader.Seq()
	seq2, _ := follower.Seq()
	if seq1 != seq2 || seq1 != uint64(len(log)) {
		t.Fatalf("seq leader %d follower %d log %d", seq1, seq2, len(log))
	}
	db2.Close()
}

func TestStoreSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	_, db := openTestStore(t, path, nil)
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, u64(SchemaVersion+1))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewStore(StoreOptions{DB: db}); err == nil {
		t.Fatal("a newer schema was accepted")
	}
	db.Close()
}

func TestAgeInYears(t *testing.T) {
	d := func(s string) time.Time { v, _ := time.Parse("2006-01-02", s); return v }
	cases := []struct {
		birth, at string
		want      int
	}{
		{"2010-05-10", "2026-05-09", 15},
		{"2010-05-10", "2026-05-10", 16},
		{"2012-02-29", "2026-02-28", 13},
		{"2012-02-29", "2026-03-01", 14},
		{"2026-01-01", "2026-06-01", 0},
	}
	for _, c := range cases {
		if got := AgeInYears(d(c.birth), d(c.at)); got != c.want {
			t.Errorf("AgeInYears(%s, %s) = %d, want %d", c.birth, c.at, got, c.want)
		}
	}
}

// TestStoreConcurrentDuplicates: the duplicate check runs in the insert's
// transaction, so of many concurrent identical creates exactly one wins.
func TestStoreConcurrentDuplicates(t *testing.T) {
	s, db := openTestStore(t, filepath.Join(t.TempDir(), "d.db"), nil)
	defer db.Close()
	sub := testSub(t, "RR8", "MBX001", base+"&Patient.identifier="+nhsA+"&MessageHeader.event=vaccinations-1", StatusActive)
	const n = 8
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := s.Create(sub, "x", CreateOptions{RejectDuplicate: true})
			errs <- err
		}()
	}
	won := 0
	for i := 0; i < n; i++ {
		err := <-errs
		var dup *DuplicateError
		switch {
		case err == nil:
			won++
		case !errors.As(err, &dup):
			t.Fatal(err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d identical creates succeeded", won, n)
	}
}

// TestMemIndexFollowsConcurrentWriters matches while several goroutines
// write, then checks the memory index against the store.
func TestMemIndexFollowsConcurrentWriters(t *testing.T) {
	s, db := openTestStore(t, filepath.Join(t.TempDir(), "w.db"), nil)
	defer db.Close()
	mem, err := NewMemIndex(s)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMatcher(MatcherOptions{Index: mem})
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
				if _, err := m.Match(EventFacts{EventCode: propEvents[0], NHSNumber: validNHS(1), SubICB: propOrgs}); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	writersDone := make(chan error, 4)
	for w := 0; w < 4; w++ {
		go func(w int) {
			r := rand.New(rand.NewPCG(uint64(w), 5))
			var mine []string
			for i := 0; i < 40; i++ {
				if len(mine) > 0 && r.IntN(3) == 0 {
					id := mine[r.IntN(len(mine))]
					if _, err := s.SetStatus(id, StatusOff, "w", ""); err != nil && !errors.Is(err, ErrTransition) {
						writersDone <- err
						return
					}
					continue
				}
				sub, err := s.Create(testSub(t, "RR8", propEPs[w%3], randomCriteria(r), StatusActive), "w", CreateOptions{})
				if err != nil {
					writersDone <- err
					return
				}
				mine = append(mine, sub.ID)
			}
			writersDone <- nil
		}(w)
	}
	for w := 0; w < 4; w++ {
		if err := <-writersDone; err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	<-readerDone
	all, _, err := s.List(Query{})
	if err != nil {
		t.Fatal(err)
	}
	model := map[string]*Subscription{}
	for _, sub := range all {
		model[sub.ID] = sub
	}
	seq, _ := s.Seq()
	if mem.Seq() != seq {
		t.Fatalf("memory index at %d, store at %d", mem.Seq(), seq)
	}
	checkIndexReader(t, mem, model)
}

// TestStoreRebuildIndexes: the index rebuild a migration relies on restores
// damaged or missing index buckets exactly.
func TestStoreRebuildIndexes(t *testing.T) {
	s, db := openTestStore(t, filepath.Join(t.TempDir(), "r.db"), nil)
	defer db.Close()
	r := rand.New(rand.NewPCG(11, 11))
	model := map[string]*Subscription{}
	for i := 0; i < 60; i++ {
		sub, err := s.Create(testSub(t, propOwners[r.IntN(3)], propEPs[r.IntN(3)], randomCriteria(r), []Status{StatusActive, StatusRequested}[r.IntN(2)]), "x", CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		model[sub.ID] = sub
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketGeneric); err != nil {
			return err
		}
		// A stale entry that no record explains.
		return tx.Bucket(bucketOwner).Put(key("ZZZ", "ffff"), []byte{})
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.RebuildIndexes(); err != nil {
		t.Fatal(err)
	}
	checkStore(t, s, db, model)
}

// TestStoreMigratesFromEmpty: a file written before the subscription store
// existed (schema 0: no buckets) is brought to SchemaVersion on open, and
// reopening does not migrate again.
func TestStoreMigratesFromEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("someone.else")); return err }); err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(StoreOptions{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(testSub(t, "RR8", "MBX1", critGP, StatusActive), "x", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, db = openTestStore(t, path, nil)
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if v := binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keySchema)); v != SchemaVersion {
			t.Fatalf("schema %d", v)
		}
		if tx.Bucket([]byte("someone.else")) == nil {
			t.Fatal("another component's bucket was touched")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Count(); n != 1 {
		t.Fatalf("%d subscriptions after reopen", n)
	}
}
