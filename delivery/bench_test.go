package delivery

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/delivery/mesh"
	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/subscription"
)

// TestThroughput measures events/s from publish to acknowledged mailbox
// delivery with 10,000 stored subscriptions, and the raw JetStream publish
// rate of the same payloads in the same run. It is a measurement, not a
// check: set EMS_BENCH=1 (EMS_BENCH_EVENTS to change the event count).
func TestThroughput(t *testing.T) {
	if os.Getenv("EMS_BENCH") == "" {
		t.Skip("set EMS_BENCH=1 to measure delivery throughput")
	}
	events := 5000
	if s := os.Getenv("EMS_BENCH_EVENTS"); s != "" {
		events, _ = strconv.Atoi(s)
	}
	const subs, mailboxes, patients = 10000, 10, 2000
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// 10k subscriptions: explicit ones for 2,000 patients spread over 10
	// mailboxes (5 per patient, each mailbox once per patient at most),
	// with tags on half.
	e.db.NoSync = true
	nhs := make([]string, patients)
	for i := range nhs {
		nhs[i] = validNHS(1000 + i*13)
	}
	for i := range subs {
		p := i % patients
		mb := fmt.Sprintf("MBX%02d", (p+i/patients*2)%mailboxes)
		crit := "/Bundle?type=message&Patient.identifier=" + nhs[p] + "&MessageHeader.event=pds-change-of-gp-1"
		if i%2 == 0 {
			crit += "&tag=t" + strconv.Itoa(i)
		}
		c, cerr := subscription.ParseCriteria(crit)
		if cerr != nil {
			t.Fatal(cerr)
		}
		if _, err := e.store.Create(subscription.Subscription{Status: subscription.StatusActive, Owner: "RR8",
			Contacts: []subscription.Contact{{System: "url", Value: "https://directory.spineservices.nhs.uk/STU3/Organization/RR8"}},
			Reason:   "bench", CriteriaText: crit, Criteria: c,
			Channel: subscription.Channel{Type: "message", Endpoint: mb}}, "bench", subscription.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	e.db.NoSync = false

	raw, err := os.ReadFile("../testdata/nems-examples/PDS-Change-Of-GP-ems-example.xml")
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]*nats.Msg, events)
	for i := range msgs {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		h := nats.Header{}
		p := nhs[i%patients]
		h.Set(fhir.HeaderEventCode, "pds-change-of-gp-1")
		h.Set(fhir.HeaderNHSNumber, p)
		h.Set(fhir.HeaderMessageID, id)
		h.Set(fhir.HeaderReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
		h.Set(fhir.HeaderContentType, "application/fhir+xml")
		h.Set(nats.MsgIdHdr, id)
		msgs[i] = &nats.Msg{Subject: fhir.EventSubject("pds-change-of-gp-1", p), Header: h, Data: raw}
	}

	// Raw JetStream: the same payloads into a file stream of the same shape.
	if _, err := e.ns.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}, Storage: jetstream.FileStorage, Duplicates: time.Hour}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	publishAll(t, e.ns.JS, msgs, "raw.")
	rawRate := float64(events) / time.Since(start).Seconds()

	// End to end: fan-out running, one MESH client per mailbox draining
	// over the HTTP API (list, retrieve, acknowledge).
	e.fanout(t, ctx)
	auth := mesh.NewAuthenticator(mesh.AuthOptions{SharedKey: "k", Passwords: map[string]string{}})
	passwords := map[string]string{}
	for i := range mailboxes {
		passwords[fmt.Sprintf("MBX%02d", i)] = "pw"
	}
	auth = mesh.NewAuthenticator(mesh.AuthOptions{SharedKey: "k", Passwords: passwords})
	srv := httptest.NewServer(mesh.NewHandler(mesh.HandlerOptions{Store: e.meshS, Auth: auth}))
	defer srv.Close()
	want := events * (subs / patients) // every event matches 5 subscriptions in 5 mailboxes
	var got sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	start = time.Now()
	for mb := range passwords {
		got.Add(1)
		go func() {
			defer got.Done()
			c := &benchClient{base: srv.URL, mb: mb}
			for {
				mu.Lock()
				done := acked >= want
				mu.Unlock()
				if done || ctx.Err() != nil || time.Since(start) > 10*time.Minute {
					return
				}
				ids := c.list(t)
				if len(ids) == 0 {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				for _, id := range ids {
					c.call(t, "GET", "/inbox/"+id)
					c.call(t, "PUT", "/inbox/"+id+"/status/acknowledged")
				}
				mu.Lock()
				acked += len(ids)
				mu.Unlock()
			}
		}()
	}
	publishAll(t, e.ns.JS, msgs, "")
	published := time.Since(start)
	var fannedOut time.Duration
	for {
		ci, err := e.ns.JS.Consumer(ctx, "EMS_EVENTS", "ems-delivery-fanout")
		if err != nil {
			t.Fatal(err)
		}
		info, err := ci.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			fannedOut = time.Since(start)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	got.Wait()
	elapsed := time.Since(start)
	e2e := float64(events) / elapsed.Seconds()
	t.Logf("subscriptions %d, events %d, mailbox messages acknowledged %d/%d", subs, events, acked, want)
	t.Logf("stages: all published after %v, all fanned out (jobs stored) after %v (%.0f events/s), all acknowledged after %v",
		published.Round(time.Millisecond), fannedOut.Round(time.Millisecond), float64(events)/fannedOut.Seconds(), elapsed.Round(time.Millisecond))
	t.Logf("raw JetStream publish: %.0f events/s; end to end publish → acknowledged mailbox delivery: %.0f events/s (%.0f messages/s); ratio %.3f",
		rawRate, e2e, float64(acked)/elapsed.Seconds(), e2e/rawRate)
	if acked < want {
		t.Fatalf("only %d of %d deliveries acknowledged", acked, want)
	}
}

func publishAll(t *testing.T, js jetstream.JetStream, msgs []*nats.Msg, prefix string) {
	t.Helper()
	// Windows of 1000 stay under the client's limit of outstanding async
	// publishes.
	for start := 0; start < len(msgs); start += 1000 {
		var futs []jetstream.PubAckFuture
		for _, m := range msgs[start:min(start+1000, len(msgs))] {
			out := m
			if prefix != "" {
				out = &nats.Msg{Subject: prefix + m.Subject, Header: m.Header, Data: m.Data}
			}
			f, err := js.PublishMsgAsync(out)
			if err != nil {
				t.Fatal(err)
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatal(err)
			}
		}
	}
}

type benchClient struct {
	base, mb string
	count    int
}

func (c *benchClient) call(t *testing.T, method, path string) []byte {
	req, _ := http.NewRequest(method, c.base+mesh.APIPrefix+"/"+c.mb+path, nil)
	c.count++
	req.Header.Set("Authorization", mesh.Token("k", c.mb, "pw", "bench", c.count, time.Now()))
	req.Header.Set("Accept", "application/vnd.mesh.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return nil
	}
	defer resp.Body.Close()
	var b []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b = append(b, buf[:n]...)
		if err != nil {
			break
		}
	}
	if resp.StatusCode >= 300 {
		t.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return b
}

func (c *benchClient) list(t *testing.T) []string {
	var page struct {
		Messages []string `json:"messages"`
	}
	_ = json.Unmarshal(c.call(t, "GET", "/inbox?max_results=500"), &page)
	return page.Messages
}

// BenchmarkFanoutMailboxes is the fan-out of one JSON event to three
// mailboxes (two of the subscriptions tagged), with the delivery log on:
// parse, facts, match, XML conversion, three stored inbox messages, three
// log records written by the asynchronous log. Each op is a new event id,
// so nothing is a duplicate. The deliveries of the event 256 ops back are
// acknowledged in the log as the MESH API's OnAck does. cpu-ns/op is the
// process's CPU (the embedded server's and the log's goroutines included),
// the figure the fan-out's cost is about.
func BenchmarkFanoutMailboxes(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	for i, tag := range []string{"", "a", "b"} {
		c := criteriaGP
		if tag != "" {
			c += "&tag=" + tag
		}
		e.subscribe(b, "message", fmt.Sprintf("MBX%02d", i), c)
	}
	dlog, err := NewLog(e.db)
	if err != nil {
		b.Fatal(err)
	}
	al := newAsyncLog(dlog)
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() { al.run(done); close(stopped) }()
	defer func() { close(done); <-stopped }()
	o := fanoutDefaults(e)
	o.mailLog = al
	f := &Fanout{o: o}

	raw, err := os.ReadFile("../testdata/nems-examples/PDS-Change-Of-GP-ems-example.xml")
	if err != nil {
		b.Fatal(err)
	}
	root, err := fhir.Parse(raw, fhir.FormatXML, fhir.DefaultLimits())
	if err != nil {
		b.Fatal(err)
	}
	body, err := fhir.Marshal(root, fhir.FormatJSON, false)
	if err != nil {
		b.Fatal(err)
	}
	received := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	at := func(i int) time.Time { return received.Add(time.Duration(i) * time.Microsecond) }
	b.ReportAllocs()
	cpu := cpuTime(b)
	for i := 0; b.Loop(); i++ {
		h := nats.Header{}
		h.Set(fhir.HeaderEventCode, "pds-change-of-gp-1")
		h.Set(fhir.HeaderNHSNumber, nhsA)
		h.Set(fhir.HeaderMessageID, fmt.Sprintf("bench-%d", i))
		h.Set(fhir.HeaderReceivedAt, at(i).Format(time.RFC3339Nano))
		h.Set(fhir.HeaderContentType, fhir.FormatJSON.ContentType())
		if err := f.Process(ctx, h, body, uint64(i+1)); err != nil {
			b.Fatal(err)
		}
		if j := i - 256; j >= 0 {
			for mb := range 3 {
				al.put(logEntry{acked: mesh.MessageID(at(j), fmt.Sprintf("bench-%d", j), fmt.Sprintf("MBX%02d", mb)), at: at(i)})
			}
		}
	}
	cpu.report()
}

// cpuTimer reports the process's CPU time per op.
type cpuTimer struct {
	b     *testing.B
	start time.Duration
}

func cpuTime(b *testing.B) *cpuTimer { return &cpuTimer{b: b, start: processCPU()} }

func (c *cpuTimer) report() {
	if c.b.N > 0 {
		c.b.ReportMetric(float64(processCPU()-c.start)/float64(c.b.N), "cpu-ns/op")
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
