package delivery

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/delivery/internal/testnats"
	"github.com/ems-broker/ems/subscription"
)

// Lane subjects: a job lands on its endpoint's lane consumer, a job
// stored before lanes on the legacy consumer, and the two filters may
// live side by side on the work-queue stream.
func TestLaneSubjects(t *testing.T) {
	ns := testnats.Start(t, "")
	ctx := context.Background()
	if _, err := EnsureStreams(ctx, ns.JS, StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	j := &Job{ID: "ev.1", Channel: subscription.ChannelRestHook, Endpoint: "https://example.org/hook", NHSNumber: "9000000009", Matches: []MatchInfo{}}
	lane := LaneOf(j.Channel, j.Endpoint)
	tok := EndpointToken(j.Channel, j.Endpoint)
	if want := JobSubjectPrefix + "hook." + strconv.Itoa(lane) + "." + tok + ".9000000009"; j.Subject() != want {
		t.Fatalf("subject %s, want %s", j.Subject(), want)
	}
	laneCons, err := ns.JS.CreateConsumer(ctx, DefaultDeliveriesStream, jetstream.ConsumerConfig{Durable: "lane", FilterSubject: laneFilter(lane), AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := ns.JS.CreateConsumer(ctx, DefaultDeliveriesStream, jetstream.ConsumerConfig{Durable: "legacy", FilterSubject: legacyJobFilter, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("legacy and lane consumers must not overlap: %v", err)
	}
	if _, err := ns.JS.PublishMsg(ctx, j.Msg()); err != nil {
		t.Fatal(err)
	}
	old := j.Msg()
	old.Subject = JobSubjectPrefix + "hook." + tok + ".9000000009"
	old.Header.Set(nats.MsgIdHdr, "old")
	if _, err := ns.JS.PublishMsg(ctx, old); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]jetstream.Consumer{"lane": laneCons, "legacy": legacy} {
		b, err := c.Fetch(2, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var subjects []string
		for m := range b.Messages() {
			subjects = append(subjects, m.Subject())
		}
		want := j.Subject()
		if name == "legacy" {
			want = old.Subject
		}
		if len(subjects) != 1 || subjects[0] != want {
			t.Errorf("%s consumer got %v, want [%s]", name, subjects, want)
		}
	}
	// Lanes spread endpoints.
	seen := map[int]bool{}
	for i := range 500 {
		seen[LaneOf(subscription.ChannelRestHook, fmt.Sprintf("https://h%d.example/", i))] = true
	}
	if len(seen) != LaneCount {
		t.Errorf("500 endpoints fell into %d of %d lanes", len(seen), LaneCount)
	}
}

// ownership records who works which lane and fails the test the moment
// two nodes work the same lane.
type ownership struct {
	t      *testing.T
	mu     sync.Mutex
	owner  [LaneCount]string
	starts map[string][]laneSpan // node → spans
}

type laneSpan struct {
	lane       int
	start, end time.Time
}

func newOwnership(t *testing.T) *ownership {
	return &ownership{t: t, starts: map[string][]laneSpan{}}
}

func (o *ownership) work(node string) func(context.Context, int) {
	return func(ctx context.Context, lane int) {
		o.mu.Lock()
		if cur := o.owner[lane]; cur != "" {
			o.t.Errorf("lane %d taken by %s while %s works it", lane, node, cur)
		}
		o.owner[lane] = node
		i := len(o.starts[node])
		o.starts[node] = append(o.starts[node], laneSpan{lane: lane, start: time.Now()})
		o.mu.Unlock()
		<-ctx.Done()
		o.mu.Lock()
		o.owner[lane] = ""
		o.starts[node][i].end = time.Now()
		o.mu.Unlock()
	}
}

func (o *ownership) count(node string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, w := range o.owner {
		if w == node {
			n++
		}
	}
	return n
}

func (o *ownership) spans(node string) []laneSpan {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.starts[node])
}

func testLaneOptions(ns *testnats.Server, node string, fail *atomic.Bool) LaneOptions {
	return LaneOptions{JS: ns.JS, Node: node, TTL: 2 * time.Second, Renew: 300 * time.Millisecond, Margin: 500 * time.Millisecond,
		failRenew: fail.Load}
}

func startLanes(t *testing.T, o LaneOptions, work func(context.Context, int)) (*laneManager, context.CancelFunc) {
	t.Helper()
	m, err := newLaneManager(context.Background(), o, work)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return m, stop
}

// Two nodes share the lanes; one stops renewing (NATS out of its reach)
// and keeps running: it stops working its lanes before its leases can
// expire, and the other takes them only after they have expired. At no
// moment do two nodes work one lane.
func TestLaneLeasesOneOwnerAtATime(t *testing.T) {
	ns := testnats.Start(t, "")
	own := newOwnership(t)
	var failA, failB atomic.Bool
	oa := testLaneOptions(ns, "a", &failA)
	a, _ := startLanes(t, oa, own.work("a"))
	waitFor(t, "a alone works every lane", func() bool { return own.count("a") == LaneCount })

	startLanes(t, testLaneOptions(ns, "b", &failB), own.work("b"))
	waitFor(t, "b takes its share", func() bool {
		return own.count("b") > 0 && own.count("a")+own.count("b") == LaneCount && len(a.heldLanes()) == own.count("a")
	})
	t.Logf("shared: a %d lanes, b %d lanes", own.count("a"), own.count("b"))
	time.Sleep(time.Second) // stable: nothing moves while both are up
	aLanes := a.heldLanes()
	if own.count("a") != len(aLanes) || own.count("a")+own.count("b") != LaneCount {
		t.Fatalf("lanes moved while both nodes were up: a %d, b %d", own.count("a"), own.count("b"))
	}

	failedAt := time.Now()
	failA.Store(true)
	waitFor(t, "b takes a's lanes", func() bool { return own.count("b") == LaneCount })
	for _, s := range own.spans("a") {
		if slices.Contains(aLanes, s.lane) && s.end.After(failedAt.Add(oa.TTL-oa.Margin+100*time.Millisecond)) {
			t.Errorf("a worked lane %d until %v after its last renewal, past TTL−margin", s.lane, s.end.Sub(failedAt))
		}
	}
	// a's last confirmed renewal was sent at most one period before it
	// failed; its leases cannot expire before that + TTL.
	earliest := failedAt.Add(oa.TTL - oa.Renew - 50*time.Millisecond)
	for _, s := range own.spans("b") {
		if slices.Contains(aLanes, s.lane) && s.start.After(failedAt) && s.start.Before(earliest) {
			t.Errorf("b took lane %d %v after a failed, before a's lease could expire (%v)", s.lane, s.start.Sub(failedAt), oa.TTL-oa.Renew)
		}
	}

	// a reaches NATS again: it takes back its share, handed over by b.
	failA.Store(false)
	waitFor(t, "a back", func() bool {
		return own.count("a") > 0 && own.count("a")+own.count("b") == LaneCount
	})
}

// A node that stops (context ended) gives its leases back at once: the
// other takes them without waiting for the TTL.
func TestLaneLeasesHandedBackOnStop(t *testing.T) {
	ns := testnats.Start(t, "")
	own := newOwnership(t)
	var never atomic.Bool
	startLanes(t, testLaneOptions(ns, "a", &never), own.work("a"))
	_, stopB := startLanes(t, testLaneOptions(ns, "b", &never), own.work("b"))
	waitFor(t, "shared", func() bool {
		return own.count("a") > 0 && own.count("b") > 0 && own.count("a")+own.count("b") == LaneCount
	})
	holders, err := LaneHolders(context.Background(), ns.JS, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(holders["a"]) != own.count("a") || len(holders["b"]) != own.count("b") {
		t.Errorf("LaneHolders %v; a works %d lanes, b %d", holders, own.count("a"), own.count("b"))
	}
	stopped := time.Now()
	stopB()
	waitFor(t, "a has every lane", func() bool { return own.count("a") == LaneCount })
	if took := time.Since(stopped); took > 1500*time.Millisecond {
		t.Errorf("a took %v to take over lanes given back, want well under the 2 s TTL", took)
	}
}

// laneReceiver is a webhook endpoint counting concurrent requests and
// recording the order of each patient's events.
type laneReceiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	inFlight int
	maxIn    int
	arrivals map[string][]int // nhs → seq of every request, in arrival order
	ok       map[string]map[int]int
	requests int
	fail     func() bool
}

func newLaneReceiver(t *testing.T, fail func() bool) *laneReceiver {
	rc := &laneReceiver{arrivals: map[string][]int{}, ok: map[string]map[int]int{}, fail: fail}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nhs := r.Header.Get("X-Nhs")
		seq, _ := strconv.Atoi(r.Header.Get("X-Seq"))
		rc.mu.Lock()
		rc.inFlight++
		rc.maxIn = max(rc.maxIn, rc.inFlight)
		rc.requests++
		rc.arrivals[nhs] = append(rc.arrivals[nhs], seq)
		status := 200
		if rc.fail != nil && rc.fail() {
			status = 503
		} else {
			if rc.ok[nhs] == nil {
				rc.ok[nhs] = map[int]int{}
			}
			rc.ok[nhs][seq]++
		}
		rc.mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		rc.mu.Lock()
		rc.inFlight--
		rc.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// laneStreams creates what lanes read besides the jobs: the events stream
// and the fan-out's consumer on it (the test plays the fan-out).
func laneStreams(t *testing.T, ns *testnats.Server) jetstream.Consumer {
	t.Helper()
	ctx := context.Background()
	if _, err := EnsureStreams(ctx, ns.JS, StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "EMS_EVENTS", Subjects: []string{"ems.events.>"}}); err != nil {
		t.Fatal(err)
	}
	fan, err := ns.JS.CreateConsumer(ctx, "EMS_EVENTS", jetstream.ConsumerConfig{Durable: "ems-delivery-fanout",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return fan
}

// lanesNode is one dispatcher with lanes: a "node" of the cluster.
func lanesNode(t *testing.T, ns *testnats.Server, node string, fail *atomic.Bool, conc int, br BreakerConfig) context.CancelFunc {
	t.Helper()
	sender, err := NewSender(SenderOptions{Timeout: 2 * time.Second, Secrets: []string{testSecret},
		Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	dlog, err := NewLog(testnats.Bolt(t))
	if err != nil {
		t.Fatal(err)
	}
	lo := testLaneOptions(ns, node, fail)
	pol := Policy{Backoff: Backoff{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond, Multiplier: 2},
		MaxAttempts: 1000, MaxAge: time.Hour, RetryAfterMax: time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := NewDispatcher(ctx, DispatcherOptions{JS: ns.JS, Log: dlog, Sender: sender, Lanes: &lo,
		Policy: func(string) Policy { return pol }, Concurrency: func(string) int { return conc }, Breaker: br,
		AckWait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// hookJob is the webhook job of event seq (patient nhs) to endpoint.
func hookJob(endpoint, nhs string, seq int) *Job {
	return &Job{ID: fmt.Sprintf("ev-%s-%d.%s", nhs, seq, EndpointToken(subscription.ChannelRestHook, endpoint)),
		Channel: subscription.ChannelRestHook, Endpoint: endpoint, NHSNumber: nhs, EventID: fmt.Sprintf("ev-%s-%d", nhs, seq),
		EventSeq: uint64(seq), EventCode: "pds-change-of-gp-1", Matches: []MatchInfo{{Subscription: "s", Kind: "explicit"}},
		Headers: []string{"X-Nhs: " + nhs, "X-Seq: " + strconv.Itoa(seq)}, ContentType: "application/fhir+xml", Body: []byte("<Bundle/>")}
}

func publishHookJob(t *testing.T, js jetstream.JetStream, endpoint, nhs string, seq int) {
	t.Helper()
	if _, err := js.PublishMsg(context.Background(), hookJob(endpoint, nhs, seq).Msg()); err != nil {
		t.Fatal(err)
	}
}

// Two dispatcher nodes with lanes deliver every job, each patient's jobs
// to each endpoint in publish order and never more than the endpoint's
// concurrency at once across both nodes, while one node loses NATS
// (keeps running, stops renewing), and after it comes back.
func TestLanesOrderAndConcurrencyAcrossNodes(t *testing.T) {
	ns := testnats.Start(t, "")
	laneStreams(t, ns)
	var failA, failB atomic.Bool
	const conc = 2
	// 20 % of requests fail: the breaker must not open on a bad run.
	br := BreakerConfig{Failures: 1000, FailurePercent: 100}
	lanesNode(t, ns, "a", &failA, conc, br)
	lanesNode(t, ns, "b", &failB, conc, br)

	var rmu sync.Mutex
	rnd := rand.New(rand.NewPCG(1, 2))
	flaky := func() bool { rmu.Lock(); defer rmu.Unlock(); return rnd.Float64() < 0.2 }
	var receivers []*laneReceiver
	for range 4 {
		receivers = append(receivers, newLaneReceiver(t, flaky))
	}
	const patients, events = 5, 30
	seq := 0
	publish := func(from, to int) {
		for e := from; e < to; e++ {
			for p := range patients {
				seq++
				for _, rc := range receivers {
					publishHookJob(t, ns.JS, rc.srv.URL+"/hook", validNHS(p), seq)
				}
			}
		}
	}
	delivered := func() int {
		n := 0
		for _, rc := range receivers {
			rc.mu.Lock()
			for _, m := range rc.ok {
				n += len(m)
			}
			rc.mu.Unlock()
		}
		return n
	}
	publish(0, 10)
	waitFor(t, "some deliveries", func() bool { return delivered() > 50 })
	failB.Store(true) // b can no longer reach NATS; it keeps running
	publish(10, 20)
	time.Sleep(2500 * time.Millisecond) // b's leases expire, a takes over
	failB.Store(false)
	publish(20, events)
	total := patients * events * len(receivers)
	deadline := time.Now().Add(60 * time.Second)
	for delivered() < total {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d jobs delivered", delivered(), total)
		}
		time.Sleep(50 * time.Millisecond)
	}
	requests := 0
	for i, rc := range receivers {
		rc.mu.Lock()
		requests += rc.requests
		if rc.maxIn > conc {
			t.Errorf("endpoint %d: %d requests at once across the nodes, limit %d", i, rc.maxIn, conc)
		}
		for nhs, seqs := range rc.arrivals {
			if !slices.IsSorted(seqs) {
				t.Errorf("endpoint %d, patient %s: attempts out of publish order: %v", i, nhs, seqs)
			}
		}
		rc.mu.Unlock()
	}
	t.Logf("%d jobs delivered in %d requests", total, requests)
}

// An endpoint's breaker opens after its failures across the cluster, not
// after that many on every node.
func TestLanesBreakerAcrossNodes(t *testing.T) {
	ns := testnats.Start(t, "")
	laneStreams(t, ns)
	var never atomic.Bool
	br := BreakerConfig{Failures: 3, Cooldown: time.Minute}
	lanesNode(t, ns, "a", &never, 1, br)
	lanesNode(t, ns, "b", &never, 1, br)
	dead := newLaneReceiver(t, func() bool { return true })
	// Wait until the lanes are split, not for a fixed time: a lane that
	// moved while the jobs were sent would start its new owner's breaker
	// afresh (CI once saw 4 requests).
	var last string
	var since time.Time
	waitFor(t, "the lanes split between both nodes, unchanged for three renewals", func() bool {
		h, err := LaneHolders(context.Background(), ns.JS, "")
		if err != nil || len(h["a"]) == 0 || len(h["b"]) == 0 || len(h[""]) > 0 {
			last = ""
			return false
		}
		if now := fmt.Sprint(h); now != last {
			last, since = now, time.Now()
		}
		return time.Since(since) > 900*time.Millisecond
	})
	for i := range 20 {
		publishHookJob(t, ns.JS, dead.srv.URL, validNHS(100+i), i+1)
	}
	time.Sleep(2 * time.Second)
	dead.mu.Lock()
	defer dead.mu.Unlock()
	if dead.requests != br.Failures {
		t.Errorf("%d requests to a dead endpoint from two nodes; the breaker opens after %d", dead.requests, br.Failures)
	}
}

// fanout plays the fan-out: it stores n events (patient nhs(i)), then
// takes them from the fan-out consumer in batches of 8 and stores each
// one's job before acknowledging it; racing stores a batch's jobs in
// reverse event order, slowly, as two nodes fanning out at once may.
func fanout(t *testing.T, ns *testnats.Server, fan jetstream.Consumer, endpoint string, n int, nhs func(int) string, racing bool) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		h := nats.Header{}
		h.Set("Ems-Nhs-Number", nhs(i))
		if _, err := ns.JS.PublishMsg(ctx, &nats.Msg{Subject: "ems.events.pds-change-of-gp-1." + nhs(i), Header: h, Data: []byte("e")}); err != nil {
			t.Fatal(err)
		}
	}
	for done := 0; done < n; {
		batch, err := fan.Fetch(8, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if racing {
			slices.Reverse(msgs)
		}
		for _, m := range msgs {
			md, _ := m.Metadata()
			publishHookJob(t, ns.JS, endpoint, m.Headers().Get("Ems-Nhs-Number"), int(md.Sequence.Stream))
			if racing {
				time.Sleep(15 * time.Millisecond)
			}
		}
		for _, m := range msgs {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		done += len(msgs)
	}
}

// With several nodes fanning out, a patient's later event can have its
// job stored first. The test plays such a fan-out (each batch's jobs
// stored in reverse event order, slowly, before the events are
// acknowledged): the jobs still reach the endpoint in event order.
func TestLanesOrderWhenFanoutRaces(t *testing.T) {
	ns := testnats.Start(t, "")
	fan := laneStreams(t, ns)
	var never atomic.Bool
	lanesNode(t, ns, "a", &never, 4, BreakerConfig{Failures: 1000})
	lanesNode(t, ns, "b", &never, 4, BreakerConfig{Failures: 1000})
	rc := newLaneReceiver(t, nil)
	const events = 48
	start := time.Now()
	t.Cleanup(func() {
		if t.Failed() {
			rc.mu.Lock()
			defer rc.mu.Unlock()
			t.Logf("after %v, attempts per patient in arrival order: %v", time.Since(start).Round(time.Millisecond), rc.arrivals)
		}
	})
	fanout(t, ns, fan, rc.srv.URL+"/hook", events, func(i int) string { return validNHS(i % 2) }, true)
	t.Logf("fan-out done after %v", time.Since(start).Round(time.Millisecond))
	waitProgress(t, "every job delivered", events, 15*time.Second, func() int {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return len(rc.ok[validNHS(0)]) + len(rc.ok[validNHS(1)])
	})
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for nhs, seqs := range rc.arrivals {
		if !slices.IsSorted(seqs) {
			t.Errorf("patient %s: out of event order: %v", nhs, seqs)
		}
	}
}

// waitProgress waits until count reaches want, and fails when it has not
// moved for stall: on a loaded machine two chains of 24 serial deliveries
// (each a webhook call, a bbolt commit and a confirmed ack) took 4 to 14 s
// under -race at load 10 to 45, close to a fixed 15 s deadline, while a
// stuck lane or ordering index stops them altogether.
func waitProgress(t *testing.T, what string, want int, stall time.Duration, count func() int) {
	t.Helper()
	last, moved := -1, time.Now()
	for {
		n := count()
		if n == want {
			return
		}
		if n != last {
			last, moved = n, time.Now()
		}
		if time.Since(moved) > stall {
			t.Fatalf("timed out waiting for %s: %d of %d, none more for %v", what, n, want, stall)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The race behind TestLanesOrderWhenFanoutRaces, played step by step:
// turn found j's order key free, then, while predecessorsKnown read the
// fan-out and the stream, the lane received j's predecessors (seen moved
// past them). They are in the ordering index now, not on the stream
// beyond seen: j must still wait for them.
func TestLanesPredecessorEnteredDuringCheck(t *testing.T) {
	ns := testnats.Start(t, "")
	const endpoint, events = "http://127.0.0.1:9/hook", 3
	nhs := validNHS(3)
	fanout(t, ns, laneStreams(t, ns), endpoint, events, func(int) string { return nhs }, false)
	var never atomic.Bool
	lo := testLaneOptions(ns, "a", &never)
	dlog, err := NewLog(testnats.Bolt(t))
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDispatcher(context.Background(), DispatcherOptions{JS: ns.JS, Log: dlog, Lanes: &lo})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	last := hookJob(endpoint, nhs, events)
	lane := LaneOf(last.Channel, last.Endpoint)
	d.enter(last)
	if ok, err := d.predecessorsKnown(ctx, last); err != nil || ok {
		t.Fatalf("earlier jobs on the stream, not received: known %v, %v; want false", ok, err)
	}
	// The lane receives every job (stream sequences 1..events) meanwhile.
	var earlier []*Job
	for seq := 1; seq < events; seq++ {
		earlier = append(earlier, hookJob(endpoint, nhs, seq))
		d.enter(earlier[len(earlier)-1])
	}
	d.seen[lane].Store(events)
	if ok, err := d.predecessorsKnown(ctx, last); err != nil || ok {
		t.Fatalf("earlier jobs in the ordering index: known %v, %v; want false", ok, err)
	}
	for _, j := range earlier {
		d.leave(j)
	}
	if ok, err := d.predecessorsKnown(ctx, last); err != nil || !ok {
		t.Fatalf("earlier jobs finished: known %v, %v; want true", ok, err)
	}
}

// One patient's backlog to one endpoint is a strictly serial chain: what
// lanes add per delivery (the confirmed ack, the predecessor check) shows
// as the ratio of the two drain times, same jobs, same run.
//
// It is a measurement as much as a test: the serial chain's length under
// -race on a loaded machine is what timed out in CI, so the default run is
// short and EMS_BENCH=1 runs 300 jobs for a steadier ratio.
func TestLanesOnePatientBacklog(t *testing.T) {
	jobs := 60
	if os.Getenv("EMS_BENCH") == "1" {
		jobs = 300
	}
	drain := func(lanes bool) time.Duration {
		ns := testnats.Start(t, "")
		rc := newLaneReceiver(t, nil)
		fanout(t, ns, laneStreams(t, ns), rc.srv.URL, jobs, func(int) string { return validNHS(7) }, false)
		start := time.Now()
		if lanes {
			var never atomic.Bool
			lanesNode(t, ns, "a", &never, 4, BreakerConfig{})
		} else {
			sender, err := NewSender(SenderOptions{Timeout: 2 * time.Second, Secrets: []string{testSecret},
				Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
			if err != nil {
				t.Fatal(err)
			}
			dlog, err := NewLog(testnats.Bolt(t))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			d, err := NewDispatcher(ctx, DispatcherOptions{JS: ns.JS, Log: dlog, Sender: sender, AckWait: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { defer close(done); _ = d.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
		}
		waitFor(t, "the backlog delivered", func() bool {
			rc.mu.Lock()
			defer rc.mu.Unlock()
			return len(rc.ok[validNHS(7)]) == jobs
		})
		took := time.Since(start)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if seqs := rc.arrivals[validNHS(7)]; !slices.IsSorted(seqs) {
			t.Errorf("lanes=%v: out of order", lanes)
		}
		return took
	}
	single, laned := drain(false), drain(true)
	t.Logf("%d jobs for one patient: single node %v, lanes %v (x%.2f)", jobs, single.Round(time.Millisecond), laned.Round(time.Millisecond),
		laned.Seconds()/single.Seconds())
}
