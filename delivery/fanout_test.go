package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/delivery/internal/testnats"
	"github.com/ems-broker/ems/delivery/mesh"
	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
	"github.com/ems-broker/ems/subscription"
)

const nhsA = "9912003888"

// env is a real embedded JetStream and a real subscription store.
type env struct {
	ns    *testnats.Server
	store *subscription.Store
	cat   *catalog.Catalog
	meshS *mesh.Store
	st    *Streams
	db    *bolt.DB
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ns := testnats.Start(t, "")
	db := testnats.Bolt(t)
	store, err := subscription.NewStore(subscription.StoreOptions{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := ns.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "EMS_EVENTS", Subjects: []string{"ems.events.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	st, err := EnsureStreams(ctx, ns.JS, StreamsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	meshStore, err := mesh.NewStore(ctx, ns.JS, mesh.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &env{ns: ns, store: store, cat: catalog.Default(), meshS: meshStore, st: st, db: db}
}

func (e *env) subscribe(t testing.TB, channel, endpoint, criteria string, headers ...string) string {
	t.Helper()
	c, cerr := subscription.ParseCriteria(criteria)
	if cerr != nil {
		t.Fatalf("criteria %q: %v", criteria, cerr)
	}
	sub, err := e.store.Create(subscription.Subscription{Status: subscription.StatusActive, Owner: "RR8",
		Contacts: []subscription.Contact{{System: "url", Value: "https://directory.spineservices.nhs.uk/STU3/Organization/RR8"}},
		Reason:   "test", CriteriaText: criteria, Criteria: c,
		Channel: subscription.Channel{Type: channel, Endpoint: endpoint, Payload: "application/fhir+xml", Headers: headers}}, "test", subscription.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return sub.ID
}

func (e *env) fanout(t *testing.T, ctx context.Context) *Fanout {
	t.Helper()
	f, err := NewFanout(ctx, FanoutOptions{JS: e.ns.JS, EventsStream: "EMS_EVENTS",
		Matcher:       subscription.NewMatcher(subscription.MatcherOptions{Index: e.store, Catalog: e.cat}),
		Subscriptions: e.store, Catalog: e.cat, AckWait: 5 * time.Second, MaxDeliver: 20})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = f.Run(ctx) }()
	return f
}

// event publishes a fixture with a fresh id the way the broker stores it.
func publishEvent(t *testing.T, js jetstream.JetStream, file, id string, format fhir.Format) []byte {
	t.Helper()
	raw, err := os.ReadFile("../testdata/nems-examples/" + file)
	if err != nil {
		t.Fatal(err)
	}
	root, err := fhir.Parse(raw, fhir.FormatXML, fhir.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	root.ChildrenNamed("entry")[0].Child("resource").Resource().Child("id").Value = id
	body, err := fhir.Marshal(root, format, false)
	if err != nil {
		t.Fatal(err)
	}
	h := nats.Header{}
	h.Set(fhir.HeaderEventCode, "pds-change-of-gp-1")
	h.Set(fhir.HeaderNHSNumber, nhsA)
	h.Set(fhir.HeaderMessageID, id)
	h.Set(fhir.HeaderReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	h.Set(fhir.HeaderContentType, format.ContentType())
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: fhir.EventSubject("pds-change-of-gp-1", nhsA), Header: h, Data: body}, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
	return body
}

const criteriaGP = "/Bundle?type=message&Patient.identifier=" + nhsA + "&MessageHeader.event=pds-change-of-gp-1"

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestFanoutOneCopyPerEndpoint(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s1 := e.subscribe(t, "message", "MBX01", criteriaGP+"&tag=team-a")
	s2 := e.subscribe(t, "message", "MBX01", criteriaGP+"&tag=team-b")
	e.subscribe(t, "message", "MBX01", criteriaGP+"&Patient.age=gt150") // same mailbox, filtered out
	e.subscribe(t, "message", "MBX02", criteriaGP)                      // untagged
	e.subscribe(t, "message", "MBX03", "/Bundle?type=message&Patient.identifier=9434765919&MessageHeader.event=pds-change-of-gp-1")
	hook := e.subscribe(t, "rest-hook", "https://example.org/hook", criteriaGP, "Authorization: Bearer x")
	e.fanout(t, ctx)

	xmlBody := publishEvent(t, e.ns.JS, "PDS-Change-Of-GP-ems-example.xml", "11111111-1111-4111-8111-111111111111", fhir.FormatXML)
	jsonBody := publishEvent(t, e.ns.JS, "PDS-Change-Of-GP-ems-example.xml", "22222222-2222-4222-8222-222222222222", fhir.FormatJSON)

	list := func(mb string) []*mesh.Message {
		msgs, _, err := e.meshS.List(ctx, mb, "", 100, nil)
		if err != nil {
			t.Fatal(err)
		}
		return msgs
	}
	waitFor(t, "two messages in MBX01 and MBX02", func() bool { return len(list("MBX01")) == 2 && len(list("MBX02")) == 2 })
	if n := len(list("MBX03")); n != 0 {
		t.Fatalf("non-matching mailbox got %d", n)
	}
	m1, err := e.meshS.Get(ctx, "MBX01", list("MBX01")[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(m1.Body) != string(xmlBody) {
		t.Fatal("XML-published body not delivered byte-identical")
	}
	if stored, err := e.ns.JS.Stream(ctx, mesh.DefaultStream); err != nil {
		t.Fatal(err)
	} else if raw, err := stored.GetMsg(ctx, m1.Seq); err != nil {
		t.Fatal(err)
	} else if raw.Header.Get(mesh.HeaderBodyEncoding) == "" || len(raw.Data) >= len(xmlBody)/2 {
		t.Fatalf("inbox stores %d bytes (encoding %q) for a %d-byte bundle", len(raw.Data), raw.Header.Get(mesh.HeaderBodyEncoding), len(xmlBody))
	}
	want := s1 + "|team-a~~~" + s2 + "|team-b"
	if s1 > s2 {
		want = s2 + "|team-b~~~" + s1 + "|team-a"
	}
	if got := m1.Header.Get("Mex-PartnerID"); got != want {
		t.Fatalf("Mex-PartnerID %q, want %q", got, want)
	}
	if got := m1.Header.Get("Mex-WorkflowID"); got != "CHANGEOFGP_1" {
		t.Fatalf("workflow %q", got)
	}
	var why []MatchInfo
	if err := json.Unmarshal([]byte(m1.Header.Get(mesh.HeaderMatch)), &why); err != nil || len(why) != 2 {
		t.Fatalf("match explanation %v %v", why, err)
	}
	m2, _ := e.meshS.Get(ctx, "MBX02", list("MBX02")[1].ID)
	if m2.Header.Get("Mex-PartnerID") != "" {
		t.Fatal("untagged match must omit Mex-PartnerID")
	}
	// The JSON-published event arrives as XML with the same content.
	if !strings.Contains(string(m2.Body[:min(len(m2.Body), 80)]), "<Bundle") {
		t.Fatalf("JSON event not converted to XML: %.60s", m2.Body)
	}
	back, err := fhir.Parse(m2.Body, fhir.FormatXML, fhir.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	again, _ := fhir.Marshal(back, fhir.FormatJSON, false)
	if string(again) != string(jsonBody) {
		t.Fatal("XML conversion lost content")
	}

	// One webhook job per event, carrying the channel headers.
	var jobs []*Job
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := e.st.Deliveries.GetMsg(ctx, seq)
		if err != nil {
			break
		}
		j, err := DecodeJob(m.Header, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
	}
	if len(jobs) != 2 || jobs[0].Matches[0].Subscription != hook || jobs[0].Headers[0] != "Authorization: Bearer x" {
		t.Fatalf("webhook jobs %+v", jobs)
	}

	// A re-run fan-out (a crash before the event's ack) adds no copies.
	evStream, _ := e.ns.JS.Stream(ctx, "EMS_EVENTS")
	stored, err := evStream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Fanout{o: fanoutDefaults(e)}).Process(ctx, stored.Header, stored.Data, 1); err != nil {
		t.Fatal(err)
	}
	if n := len(list("MBX01")); n != 2 {
		t.Fatalf("re-run created a copy: %d", n)
	}
}

func fanoutDefaults(e *env) FanoutOptions {
	return FanoutOptions{JS: e.ns.JS, Matcher: subscription.NewMatcher(subscription.MatcherOptions{Index: e.store, Catalog: e.cat}),
		Subscriptions: e.store, Catalog: e.cat, AckWait: 5 * time.Second, Metrics: NewMetrics(nil), Now: time.Now}
}

func TestPartnerID(t *testing.T) {
	cases := []struct {
		in   []MatchInfo
		want string
	}{
		{nil, ""},
		{[]MatchInfo{{Subscription: "a"}}, ""},
		{[]MatchInfo{{Subscription: "a", Tag: "x|y,z"}, {Subscription: "b"}}, "a|x|y,z"},
		{[]MatchInfo{{Subscription: "a", Tag: "t1"}, {Subscription: "b", Tag: "t2"}}, "a|t1~~~b|t2"},
	}
	for _, c := range cases {
		if got := PartnerID(c.in); got != c.want {
			t.Errorf("PartnerID(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Initial: 5 * time.Second, Max: 2 * time.Hour, Multiplier: 3}
	if got := b.Ceiling(1); got != 5*time.Second {
		t.Errorf("first ceiling %v", got)
	}
	if got := b.Ceiling(50); got != 2*time.Hour {
		t.Errorf("capped ceiling %v", got)
	}
	for n := 1; n < 30; n++ {
		for _, r := range []float64{0, 0.5, 0.999} {
			d := b.Delay(n, func() float64 { return r })
			if d < 0 || d > b.Ceiling(n) {
				t.Fatalf("delay %v outside [0,%v]", d, b.Ceiling(n))
			}
		}
	}
	if d, ok := RetryAfter("7", time.Now()); !ok || d != 7*time.Second {
		t.Errorf("Retry-After seconds: %v %v", d, ok)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if d, ok := RetryAfter(now.Add(90*time.Second).Format(http1123), now); !ok || d != 90*time.Second {
		t.Errorf("Retry-After date: %v %v", d, ok)
	}
	if _, ok := RetryAfter("soon", now); ok {
		t.Error("garbage Retry-After accepted")
	}
}

const http1123 = "Mon, 02 Jan 2006 15:04:05 GMT"

func TestMailboxDeliveriesInTheLog(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.subscribe(t, "message", "MBX01", criteriaGP+"&tag=x")
	dlog, err := NewLog(e.db)
	if err != nil {
		t.Fatal(err)
	}
	al := newAsyncLog(dlog)
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() { al.run(done); close(stopped) }()
	o := fanoutDefaults(e)
	o.mailLog = al
	body := publishEvent(t, e.ns.JS, "PDS-Change-Of-GP-ems-example.xml", "33333333-3333-4333-8333-333333333333", fhir.FormatXML)
	evStream, _ := e.ns.JS.Stream(ctx, "EMS_EVENTS")
	stored, err := evStream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Fanout{o: o}).Process(ctx, stored.Header, body, 1); err != nil {
		t.Fatal(err)
	}
	msgs, _, _ := e.meshS.List(ctx, "MBX01", "", 10, nil)
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	al.put(logEntry{acked: msgs[0].ID, at: time.Now()})
	close(done)
	<-stopped
	recs, err := dlog.List(Query{Channel: "message", Endpoint: "MBX01", NHSNumber: nhsA})
	if err != nil || len(recs) != 1 {
		t.Fatalf("log: %v %v", recs, err)
	}
	if r := recs[0]; r.ID != msgs[0].ID || r.State != StateAcknowledged || r.EventID != "33333333-3333-4333-8333-333333333333" || len(r.Matches) != 1 || r.Matches[0].Tag != "x" {
		t.Fatalf("record %+v", r)
	}
}

// TestAsyncLogAcknowledgements: an acknowledgement marks its record
// whether the record is still in the batch, was written by this log
// goroutine a moment ago, or only by an earlier one (read back from bbolt);
// one of an unknown id writes nothing.
func TestAsyncLogAcknowledgements(t *testing.T) {
	dlog, err := NewLog(testnats.Bolt(t))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 23, 1, 0, 0, 0, time.UTC)
	rec := func(id string) logEntry {
		return logEntry{rec: &Record{ID: id, Channel: "message", Endpoint: "MBX01", State: StateDelivered, Created: t0, Updated: t0,
			Matches: []MatchInfo{{Subscription: "s1", Kind: "patient"}}}}
	}
	ack := func(id string, at time.Time) logEntry { return logEntry{acked: id, at: at} }
	session := func(steps ...func(*asyncLog)) {
		al := newAsyncLog(dlog)
		done, stopped := make(chan struct{}), make(chan struct{})
		go func() { al.run(done); close(stopped) }()
		for _, s := range steps {
			s(al)
		}
		close(done)
		<-stopped
	}
	put := func(es ...logEntry) func(*asyncLog) {
		return func(al *asyncLog) {
			for _, e := range es {
				al.put(e)
			}
		}
	}
	flushed := func(*asyncLog) { time.Sleep(250 * time.Millisecond) } // past the 100 ms tick
	t1, t2, t3 := t0.Add(time.Second), t0.Add(2*time.Second), t0.Add(3*time.Second)

	session(put(rec("same-batch"), ack("same-batch", t1), rec("remembered"), rec("stored"), rec("unacked")), flushed,
		put(ack("remembered", t2), ack("nobody", t2)))
	session(put(ack("stored", t3)))
	session(put(ack("redelivered", t1), rec("redelivered"))) // an acknowledgement before a re-run's record
	for _, c := range []struct {
		id    string
		state string
		at    time.Time
	}{
		{"same-batch", StateAcknowledged, t1},
		{"remembered", StateAcknowledged, t2},
		{"stored", StateAcknowledged, t3},
		{"unacked", StateDelivered, t0},
		{"redelivered", StateDelivered, t0},
	} {
		r, err := dlog.Get(c.id)
		if err != nil {
			t.Fatalf("%s: %v", c.id, err)
		}
		if r.State != c.state || !r.Updated.Equal(c.at) || len(r.Matches) != 1 || r.Endpoint != "MBX01" {
			t.Errorf("%s: %+v, want state %s updated %v", c.id, r, c.state, c.at)
		}
	}
	if _, err := dlog.Get("nobody"); !errors.Is(err, ErrNoRecord) {
		t.Errorf("acknowledgement of an unknown id wrote a record: %v", err)
	}
}
