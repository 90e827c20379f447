package refdata

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
	"github.com/ems-broker/ems/subscription"
)

// TestMatchScaleFullRefData is issue 6's matching benchmark: Enrich +
// Match per change-of-address event on a full-size generated NSPL, with
// subscription stores of 1k and 1M subscriptions measured in the same run.
// It writes ~1 GB of CSV and a ~1 GB subscription store, so it only runs
// when asked:
//
//	REFDATA_MATCH_FULL=1 go test -run MatchScaleFullRefData -v -timeout 60m ./subscription/refdata
//
// REFDATA_MATCH_ROWS (NSPL rows, default 2.7M) and REFDATA_MATCH_SUBS (the
// large store, default 1M) make a quicker check.
func TestMatchScaleFullRefData(t *testing.T) {
	if os.Getenv("REFDATA_MATCH_FULL") == "" || testing.Short() {
		t.Skip("set REFDATA_MATCH_FULL=1 to measure Enrich+Match at 1k and 1M subscriptions on full-size reference data")
	}
	rows, large := fullSizeRows, 1_000_000
	if s := os.Getenv("REFDATA_MATCH_ROWS"); s != "" {
		fmt.Sscan(s, &rows)
	}
	if s := os.Getenv("REFDATA_MATCH_SUBS"); s != "" {
		fmt.Sscan(s, &large)
	}
	if rows < 2000 || large < 1000 {
		t.Fatalf("REFDATA_MATCH_ROWS=%d (≥2000) REFDATA_MATCH_SUBS=%d (≥1000)", rows, large)
	}
	dir := t.TempDir()
	ref := importScaleRefData(t, dir, rows)

	type size struct {
		n         int
		pop       scalePopulation
		svc       *Service
		m         *subscription.Matcher
		events    []scaleEvent
		fileBytes int64
		load      time.Duration
		ns        float64
		matches   float64
		generic   float64
	}
	var sizes []*size
	for _, n := range []int{1_000, large} {
		z := &size{n: n, pop: newScalePopulation(ref, n)}
		started := time.Now()
		store, path := loadScaleStore(t, dir, z.pop)
		z.load = time.Since(started)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		z.fileBytes = fi.Size()
		// Each size has its own demographics store holding the same number
		// of patients (those of its event stream), so that only the
		// subscription count differs between the two measurements.
		demo, err := OpenDemographics(openDB(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		z.svc, err = New(Options{DB: ref.db, Logger: quietLogger(), Demographics: demo})
		if err != nil {
			t.Fatal(err)
		}
		// The default matcher (Service.Matcher in package subscription):
		// bbolt prefix scans over the store's match indexes.
		z.m = subscription.NewMatcher(subscription.MatcherOptions{Index: store, Catalog: catalog.Default(), Now: time.Now})
		z.events = scaleEvents(t, demo, z.pop, 2048)
		t.Logf("subs=%d: %d explicit over %d patients, %d generic (%d practices, %d GP sub-ICBs, %d postcode sub-ICBs, %d LAs × %d), %d COUNTRYCODE; bulk load %v, file %.1f MB",
			n, z.pop.explicit, z.pop.patients, z.pop.generic(), len(z.pop.practices), len(z.pop.gpSubICBs), len(z.pop.pcSubICBs), len(z.pop.las), perCode, countrySubs,
			z.load.Round(time.Millisecond), float64(z.fileBytes)/1e6)
		sizes = append(sizes, z)
	}

	ctx := context.Background()
	run := func(b *testing.B, z *size) {
		matched, generic := 0, 0
		i := 0
		for b.Loop() {
			ev := z.events[i%len(z.events)]
			i++
			f, _, err := z.svc.Enrich(ctx, ev.facts, ev.bundle)
			if err != nil {
				b.Fatal(err)
			}
			ms, err := z.m.Match(f)
			if err != nil {
				b.Fatal(err)
			}
			matched += len(ms)
			for _, m := range ms {
				if m.Kind == subscription.Generic {
					generic++
				}
			}
		}
		b.ReportMetric(float64(matched)/float64(i), "matches/event")
		b.ReportMetric(float64(generic)/float64(i), "generic/event")
	}
	// The machine is shared: alternate the sizes and keep each one's best
	// round, since noise from other processes only ever adds time.
	for round := 0; round < 5; round++ {
		for _, z := range sizes {
			res := testing.Benchmark(func(b *testing.B) { run(b, z) })
			ns := float64(res.T.Nanoseconds()) / float64(res.N)
			if z.ns == 0 || ns < z.ns {
				z.ns = ns
			}
			z.matches, z.generic = res.Extra["matches/event"], res.Extra["generic/event"]
		}
	}
	small, big := sizes[0], sizes[1]
	for _, z := range sizes {
		t.Logf("subs=%-8d Enrich+Match %7.0f ns/event | %5.2f matches/event (%5.2f generic) | store %7.1f MB (%.0f B/sub), bulk load %v",
			z.n, z.ns, z.matches, z.generic, float64(z.fileBytes)/1e6, float64(z.fileBytes)/float64(z.n), z.load.Round(time.Millisecond))
	}
	ratio := big.ns / small.ns
	t.Logf("NSPL rows %d; ratio subs=%d / subs=%d: %.2fx (limit 1.5x)", rows, big.n, small.n, ratio)
	for _, z := range sizes {
		if z.generic < 1 {
			t.Errorf("subs=%d: %.2f generic matches/event: the events do not reach the generic subscriptions", z.n, z.generic)
		}
	}
	if ratio > 1.5 {
		t.Errorf("per-event Enrich+Match cost at %d subscriptions is %.2fx the 1k figure (limit 1.5x)", big.n, ratio)
	}
}

// scaleRefData is the imported reference data and the codes it holds.
type scaleRefData struct {
	db *bolt.DB
	// las are the local authorities of the fully generated postcode
	// districts in order of first appearance; districtsByLA the districts
	// (index k as in writeNSPL) of each.
	las           []int
	districtsByLA map[int][]int
	practices     int
}

const (
	scalePractices = 6500 // about the number of open GP practices in England
	scaleSubICBs   = 106  // writeNSPL's sub-ICB codes E38000001..E38000106
	perCode        = 20   // generic subscriptions per (rule, code), over 10 event types
	countrySubs    = 30   // COUNTRYCODE subscriptions, the same at any size
)

func scalePractice(i int) string  { return fmt.Sprintf("P%05d", i) }
func scaleSubICBODS(s int) string { return fmt.Sprintf("S%03d", s) }
func scaleLA(la int) string       { return fmt.Sprintf("E06%06d", la) }

// district returns writeNSPL's outward code and LA of district k.
func district(k int) (string, int) {
	a, d := k/99, k%99+1
	return fmt.Sprintf("%c%c%d", 'A'+a/26%26, 'A'+a%26, d), 1 + (a*99+d)%360
}

func inward(in int) string { return fmt.Sprintf("%d%c%c", in%10, 'A'+in/10/26%26, 'A'+in/10%26) }

// importScaleRefData generates the NSPL-shaped directory, a sub-ICB lookup
// covering its sub-ICB codes and an epraccur of scalePractices practices
// whose commissioners are those sub-ICBs, and imports all three.
func importScaleRefData(t *testing.T, dir string, rows int) scaleRefData {
	t.Helper()
	src := filepath.Join(dir, "NSPL_FULL.csv")
	started := time.Now()
	size := writeNSPL(t, src, rows)
	t.Logf("generated NSPL: %d rows, %d MiB in %v", rows, size>>20, time.Since(started).Round(time.Millisecond))

	subicb := filepath.Join(dir, "subicb.csv")
	var sb strings.Builder
	sb.WriteString("SICBL24CD,SICBL24CDH,SICBL24NM,ICB24CD,ICB24CDH,ICB24NM,NHSER24CD,NHSER24CDH,NHSER24NM,ObjectId\r\n")
	for s := 1; s <= scaleSubICBs; s++ {
		fmt.Fprintf(&sb, "E38%06d,%s,NHS Generated ICB - %s,E54%06d,Q%02d,NHS Generated ICB %d,E40000012,Y63,North East and Yorkshire,%d\r\n",
			s, scaleSubICBODS(s), scaleSubICBODS(s), 1+s%42, s%42, 1+s%42, s)
	}
	if err := os.WriteFile(subicb, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	eprac := filepath.Join(dir, "epraccur.csv")
	sb.Reset()
	for i := range scalePractices {
		out, _ := district(i % max(1, rows/2000))
		fmt.Fprintf(&sb, "%q,\"GENERATED PRACTICE %d\",\"Y63\",\"QWO\",\"THE HEALTH CENTRE\",\"STREET\",\"\",\"\",\"\",\"%s %s\",\"19740401\",\"\",\"A\",\"B\",%q,\"\",\"\",\"0113 0000000\",\"\",\"\",\"\",\"0\",\"\",\"\",\"\",\"4\",\"\"\r\n",
			scalePractice(i), i, out, inward(i%2000), scaleSubICBODS(1+i%scaleSubICBs))
	}
	if err := os.WriteFile(eprac, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	db, err := bolt.Open(filepath.Join(dir, "refdata.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st, err := OpenStore(StoreOptions{DB: db, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		k    Kind
		path string
	}{{NSPL, src}, {SubICB, subicb}, {Practices, eprac}} {
		started := time.Now()
		r, err := os.Open(f.path)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := r.Stat()
		v, err := st.Import(context.Background(), f.k, bufio.NewReaderSize(r, 1<<16), Source{Name: filepath.Base(f.path), Size: fi.Size(), Actor: "test", Activate: true})
		r.Close()
		if err != nil {
			t.Fatalf("importing %s: %v", f.path, err)
		}
		t.Logf("imported %s: %d rows in %v", filepath.Base(f.path), v.Rows, time.Since(started).Round(time.Millisecond))
	}
	os.Remove(src)

	ref := scaleRefData{db: db, districtsByLA: map[int][]int{}, practices: scalePractices}
	for k := range rows / 2000 { // full districts only: every inward code exists
		_, la := district(k)
		if len(ref.districtsByLA[la]) == 0 {
			ref.las = append(ref.las, la)
		}
		ref.districtsByLA[la] = append(ref.districtsByLA[la], k)
	}
	return ref
}

// scalePopulation is a mixed set of n subscriptions whose density per
// patient and per organisation code does not depend on n, so that an event
// matches about as many subscriptions at 1k as at 1M and the comparison is
// of lookup cost, not of result size. Generic subscriptions (perCode per
// rule and code) cover a share of the reference data's codes proportional
// to n (all of them at 1M: every practice, sub-ICB and LA); explicit ones
// (about 1.5 per patient) fill the rest. Events draw their practice and
// postcodes from the covered codes and their patient from the pool.
type scalePopulation struct {
	ref       scaleRefData
	n         int
	practices []int // practice indexes
	gpSubICBs []int // commissioners of practices
	las       []int
	pcSubICBs []int // sub-ICBs of las' postcodes
	explicit  int
	patients  int
}

func (p scalePopulation) generic() int {
	return perCode * (len(p.practices) + len(p.gpSubICBs) + len(p.las) + len(p.pcSubICBs))
}

func newScalePopulation(ref scaleRefData, n int) scalePopulation {
	frac := math.Min(1, float64(n)/1e6)
	share := func(total int) int { return max(1, int(math.Ceil(float64(total)*frac))) }
	p := scalePopulation{ref: ref, n: n}
	seen := map[int]bool{}
	for i := range share(ref.practices) {
		p.practices = append(p.practices, i)
		if s := 1 + i%scaleSubICBs; !seen[s] {
			seen[s] = true
			p.gpSubICBs = append(p.gpSubICBs, s)
		}
	}
	// At least two LAs, so that a change of address can move between two
	// LAs (and two sub-ICBs) at every size, as it does at 1M: otherwise
	// the small store's events match fewer subscriptions.
	p.las = ref.las[:min(len(ref.las), max(2, share(len(ref.las))))]
	clear(seen)
	for _, la := range p.las {
		if s := 1 + la%106; !seen[s] { // writeNSPL's sub-ICB of an LA
			seen[s] = true
			p.pcSubICBs = append(p.pcSubICBs, s)
		}
	}
	p.explicit = n - p.generic() - countrySubs
	if p.explicit < n/2 {
		panic(fmt.Sprintf("population of %d: only %d explicit", n, p.explicit))
	}
	p.patients = max(1, p.explicit*2/3)
	return p
}

var scaleEventsList = []string{"pds-change-of-gp-1", "pds-change-of-address-1", "pds-death-notification-1", "pds-birth-notification-1",
	"pds-record-change-1", "vaccinations-1", "professional-contacts-1", "newborn-hearing-1", "blood-spot-test-outcome-1", "nipe-outcome-1"}

// subscriptions yields the population in a fixed order: COUNTRYCODE, then
// the generic ones rule by rule, then explicit.
func (p scalePopulation) subscriptions(yield func(i int, crit string) bool) {
	const base = "/Bundle?type=message"
	r := rand.New(rand.NewPCG(uint64(p.n), 6))
	i := 0
	for j := range countrySubs {
		ctry := "E92000001"
		if j%5 == 4 {
			ctry = "W92000004"
		}
		if !yield(i, base+"&MessageHeader.event="+scaleEventsList[j%10]+"&subscriptionRuleType=COUNTRYCODE&Organization.identifier="+ctry) {
			return
		}
		i++
	}
	rules := []struct {
		rule  subscription.RuleType
		codes []string
	}{{rule: subscription.RuleGPPractice}, {rule: subscription.RuleGPSubICB}, {rule: subscription.RulePostcodeSubICB}, {rule: subscription.RulePostcodeLA}}
	for _, x := range p.practices {
		rules[0].codes = append(rules[0].codes, scalePractice(x))
	}
	for _, s := range p.gpSubICBs {
		rules[1].codes = append(rules[1].codes, scaleSubICBODS(s))
	}
	for _, s := range p.pcSubICBs {
		rules[2].codes = append(rules[2].codes, scaleSubICBODS(s))
	}
	for _, la := range p.las {
		rules[3].codes = append(rules[3].codes, scaleLA(la))
	}
	for _, rc := range rules {
		for _, code := range rc.codes {
			for j := range perCode {
				crit := base + "&MessageHeader.event=" + scaleEventsList[j%10] + "&subscriptionRuleType=" + string(rc.rule) + "&Organization.identifier=" + code
				switch j % 4 {
				case 1:
					crit += "&Patient.age=lt19"
				case 2:
					crit += "&GPRegistration=RegisteredOnly"
				}
				if !yield(i, crit) {
					return
				}
				i++
			}
		}
	}
	for range p.explicit {
		ev := r.IntN(10)
		crit := base + "&Patient.identifier=https://fhir.nhs.uk/Id/nhs-number|" + scaleNHS(r.IntN(p.patients)) + "&MessageHeader.event=" + scaleEventsList[ev]
		if r.IntN(3) == 0 {
			crit += "&MessageHeader.event=" + scaleEventsList[(ev+1+r.IntN(9))%10]
		}
		if r.IntN(4) == 0 {
			crit += "&tag=ward-" + strconv.Itoa(r.IntN(20))
		}
		if !yield(i, crit) {
			return
		}
		i++
	}
}

// loadScaleStore writes the population through Store.ApplyBatch, the path
// a replica catching up on the log takes: 20k subscriptions per bbolt
// transaction, on a database opened with NoSync (a benchmark store that
// need not survive a crash; the file is synced once at the end).
func loadScaleStore(t *testing.T, dir string, p scalePopulation) (*subscription.Store, string) {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("subs-%d.db", p.n))
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true, NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := subscription.NewStore(subscription.StoreOptions{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	const batch = 20_000
	chs := make([]subscription.Change, 0, batch)
	flush := func() {
		if err := store.ApplyBatch(chs); err != nil {
			t.Fatal(err)
		}
		chs = chs[:0]
	}
	var cerr error
	p.subscriptions(func(i int, crit string) bool {
		c, err := subscription.ParseCriteria(crit)
		if err != nil {
			cerr = fmt.Errorf("%s: %v", crit, err)
			return false
		}
		owner := fmt.Sprintf("O%06d", i%max(1, p.n/50))
		sub := &subscription.Subscription{ID: fmt.Sprintf("%032x", i+1), VersionID: 1, Status: subscription.StatusActive, Owner: owner,
			Contacts: []subscription.Contact{{System: "url", Value: "https://directory.spineservices.nhs.uk/STU3/Organization/" + owner, Use: "work"}},
			Reason:   "benchmark", CriteriaText: crit, Criteria: c,
			Channel: subscription.Channel{Type: subscription.ChannelMessage, Endpoint: "MBX" + owner}}
		chs = append(chs, subscription.Change{Seq: uint64(i + 1), Op: subscription.OpPut, ID: sub.ID, Subscription: sub,
			History: subscription.HistoryEntry{VersionID: 1, Action: subscription.ActionCreate}})
		if len(chs) == batch {
			flush()
		}
		return true
	})
	if cerr != nil {
		t.Fatal(cerr)
	}
	flush()
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	if got, err := store.Count(); err != nil || got != p.n {
		t.Fatalf("store holds %d subscriptions (%v), want %d", got, err, p.n)
	}
	return store, path
}

// scaleNHS is the i-th valid NHS number (modulus 11 check digit).
func scaleNHS(n int) string {
	for ; ; n++ {
		s := fmt.Sprintf("%09d", n%1_000_000_000)
		sum := 0
		for i := range 9 {
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

type scaleEvent struct {
	facts  subscription.EventFacts
	bundle *fhir.Node
}

// scaleEvents builds count change-of-address events from the fixture
// bundle, each for a patient of the pool, moving between postcodes of two
// different covered LAs, registered with a covered practice (recorded in demo, as
// the change-of-address bundle does not carry the practice).
func scaleEvents(t *testing.T, demo *DemographicsStore, p scalePopulation, count int) []scaleEvent {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(p.n), 9))
	postcode := func(la int) string {
		ks := p.ref.districtsByLA[p.las[la]]
		out, _ := district(ks[r.IntN(len(ks))])
		return out + " " + inward(r.IntN(2000))
	}
	reg := true
	evs := make([]scaleEvent, 0, count)
	for range count {
		nhs := scaleNHS(r.IntN(p.patients))
		// The move is between two different LAs at every size.
		from := r.IntN(len(p.las))
		to := (from + 1 + r.IntN(max(1, len(p.las)-1))) % len(p.las)
		newPC, oldPC := postcode(to), postcode(from)
		if err := demo.Put(Patient{NHSNumber: nhs, GPPractice: scalePractice(p.practices[r.IntN(len(p.practices))]), Registered: &reg,
			Postcode: oldPC, BirthDate: "2019-10-02"}); err != nil {
			t.Fatal(err)
		}
		bundle := readEvent(t, "PDS-Change-Of-Address-ems-example.xml", nhsMover, nhs, "LS17 7DF", newPC, "WF14 0BQ", oldPC)
		evs = append(evs, scaleEvent{bundle: bundle,
			facts: subscription.EventFacts{EventCode: "pds-change-of-address-1", MessageEventType: "new", NHSNumber: nhs}})
	}
	return evs
}
