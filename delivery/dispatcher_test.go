package delivery

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/subscription"
)

// validNHS returns the n-th Mod-11-valid NHS number from a base.
func validNHS(n int) string {
	for i := n; ; i++ {
		s := fmt.Sprintf("%09d", 990000000+i)
		sum := 0
		for k := range 9 {
			sum += int(s[k]-'0') * (10 - k)
		}
		c := 11 - sum%11
		if c == 11 {
			c = 0
		}
		if c != 10 {
			return s + strconv.Itoa(c)
		}
	}
}

const testSecret = "whsec_" + "c2VjcmV0LWtleS0wMTIzNDU2Nzg5" // base64("secret-key-0123456789")

func verify(t testing.TB, r *http.Request, body []byte) bool {
	t.Helper()
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(testSecret, "whsec_"))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(r.Header.Get("webhook-id") + "." + r.Header.Get("webhook-timestamp") + "."))
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, s := range strings.Fields(r.Header.Get("webhook-signature")) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return true
		}
	}
	return false
}

// receiver is a webhook endpoint whose behaviour a test scripts.
type receiver struct {
	t   testing.TB
	srv *httptest.Server
	mu  sync.Mutex
	// respond decides the status (and Retry-After) of each request.
	respond func(n int, r *http.Request) (int, string)
	got     []received
	n       int
}

type received struct {
	at        time.Time
	id, event string
	nhs       string
	seq       int
	body      []byte
	status    int
	headers   http.Header
}

func newReceiver(t testing.TB, respond func(n int, r *http.Request) (int, string)) *receiver {
	rc := &receiver{t: t, respond: respond}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if !verify(t, r, b) {
			t.Errorf("bad signature on %s", r.Header.Get("webhook-id"))
		}
		rc.mu.Lock()
		rc.n++
		status, ra := 200, ""
		if rc.respond != nil {
			status, ra = rc.respond(rc.n, r)
		}
		seq, _ := strconv.Atoi(r.Header.Get("X-Seq"))
		rc.got = append(rc.got, received{at: time.Now(), id: r.Header.Get("webhook-id"), event: r.Header.Get("X-Event-Message-Id"),
			nhs: r.Header.Get("X-Nhs"), seq: seq, body: b, status: status, headers: r.Header.Clone()})
		rc.mu.Unlock()
		if ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) all() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

func (rc *receiver) delivered() []received {
	var out []received
	for _, g := range rc.all() {
		if g.status < 300 {
			out = append(out, g)
		}
	}
	return out
}

type pipeline struct {
	*env
	disp   *Dispatcher
	log    *Log
	cancel context.CancelFunc
}

func startPipeline(t *testing.T, e *env, pol Policy, br BreakerConfig) *pipeline {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sender, err := NewSender(SenderOptions{Timeout: 2 * time.Second, Secrets: []string{"whsec_b2xkLXNlY3JldA==", testSecret},
		Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	dlog, err := NewLog(e.db)
	if err != nil {
		t.Fatal(err)
	}
	e.fanout(t, ctx)
	disp, err := NewDispatcher(ctx, DispatcherOptions{JS: e.ns.JS, Log: dlog, Sender: sender, Statuses: e.store,
		Policy: func(string) Policy { return pol }, Breaker: br, AckWait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = disp.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &pipeline{env: e, disp: disp, log: dlog, cancel: cancel}
}

// emit stores one event for nhs, as the broker would.
func emit(t testing.TB, js jetstream.JetStream, nhs, id string, seq int) {
	t.Helper()
	h := nats.Header{}
	h.Set(fhir.HeaderEventCode, "pds-change-of-gp-1")
	h.Set(fhir.HeaderNHSNumber, nhs)
	h.Set(fhir.HeaderMessageID, id)
	h.Set(fhir.HeaderReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	h.Set(fhir.HeaderContentType, "application/fhir+xml")
	body := []byte(fmt.Sprintf(`<Bundle xmlns="http://hl7.org/fhir"><id value="%s"/><type value="message"/></Bundle>`, id))
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: fhir.EventSubject("pds-change-of-gp-1", nhs), Header: h, Data: body}, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
}

func hookCriteria(nhs string) string {
	return "/Bundle?type=message&Patient.identifier=" + nhs + "&MessageHeader.event=pds-change-of-gp-1"
}

var fast = Policy{Backoff: Backoff{Initial: 200 * time.Millisecond, Max: 400 * time.Millisecond, Multiplier: 2},
	MaxAttempts: 5, MaxAge: time.Hour, RetryAfterMax: 5 * time.Second}

func TestWebhookRetriesThenDelivers(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(n int, _ *http.Request) (int, string) {
		if n <= 3 {
			return []int{503, 500, 429}[n-1], ""
		}
		return 204, ""
	})
	nhs := validNHS(1)
	e.subscribe(t, "rest-hook", rc.srv.URL+"/hook", hookCriteria(nhs), "X-Nhs: "+nhs)
	p := startPipeline(t, e, fast, BreakerConfig{Failures: 100})
	emit(t, e.ns.JS, nhs, "ev-1", 1)
	waitFor(t, "delivery after 3 failures", func() bool { return len(rc.delivered()) == 1 })
	got := rc.all()
	if len(got) != 4 {
		t.Fatalf("%d requests, want 4", len(got))
	}
	for i := 1; i < 4; i++ {
		if got[i].id != got[0].id {
			t.Fatal("retries must carry the same webhook-id")
		}
		gap := got[i].at.Sub(got[i-1].at)
		if gap > 2*time.Second {
			t.Errorf("gap %d = %v exceeds the schedule", i, gap)
		}
	}
	if string(got[3].body) == "" || !strings.HasPrefix(got[3].headers.Get("Content-Type"), "application/fhir+xml") {
		t.Fatalf("body/content type: %q %q", got[3].body, got[3].headers.Get("Content-Type"))
	}
	waitFor(t, "log shows delivered", func() bool {
		r, err := p.log.Get(got[0].id)
		return err == nil && r.State == StateDelivered && r.AttemptCount == 4 && len(r.Attempts) == 4
	})
}

func TestWebhookDeadLetterAndRetryAfter(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	broken := true
	rc := newReceiver(t, func(n int, _ *http.Request) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		if broken {
			return 503, "1"
		}
		return 200, ""
	})
	nhs := validNHS(2)
	e.subscribe(t, "rest-hook", rc.srv.URL, hookCriteria(nhs))
	p := startPipeline(t, e, Policy{Backoff: Backoff{Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond, Multiplier: 2},
		MaxAttempts: 3, MaxAge: time.Hour, RetryAfterMax: 5 * time.Second}, BreakerConfig{Failures: 100})
	emit(t, e.ns.JS, nhs, "ev-dead", 1)
	waitFor(t, "dead letter", func() bool {
		rs, _ := p.log.List(Query{State: StateDead})
		return len(rs) == 1
	})
	got := rc.all()
	if len(got) != 3 {
		t.Fatalf("%d attempts, want 3", len(got))
	}
	for i := 1; i < len(got); i++ {
		// Retry-After: 1 overrides the 10-20 ms schedule.
		if gap := got[i].at.Sub(got[i-1].at); gap < 950*time.Millisecond {
			t.Errorf("Retry-After not honoured: gap %v", gap)
		}
	}
	dl, err := p.st.Dead.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if dl.Header.Get(HeaderDeadReason) != "exhausted" || dl.Header.Get(HeaderDeadStatus) != "503" || dl.Header.Get(HeaderDeadAttempts) != "3" {
		t.Fatalf("dead letter headers %v", dl.Header)
	}

	// Fixed endpoint: replay through the admin API delivers it.
	mu.Lock()
	broken = false
	mu.Unlock()
	admin := httptest.NewServer(NewAdminHandler(AdminOptions{Log: p.log, Dispatcher: p.disp,
		Replayer: &Replayer{JS: e.ns.JS, Dead: p.st.Dead, Log: p.log, Subscriptions: e.store, Now: time.Now}}))
	defer admin.Close()
	resp, err := http.Get(admin.URL + AdminPrefix + "/dead-letters")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"reason": "exhausted"`) {
		t.Fatalf("dead letters: %s", b)
	}
	resp, err = http.Post(admin.URL+AdminPrefix+"/dead-letters/replay?event=ev-dead", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "ev-dead") {
		t.Fatalf("replay %d %s", resp.StatusCode, b)
	}
	waitFor(t, "replayed delivery", func() bool { return len(rc.delivered()) == 1 })
	waitFor(t, "log shows delivered", func() bool {
		r, err := p.log.Get(rc.delivered()[0].id)
		return err == nil && r.State == StateDelivered && r.Generation == 1 && r.TotalAttempts == 4
	})
	if dls, _ := (&Replayer{Dead: p.st.Dead}).DeadLetters(context.Background(), Query{}); len(dls) != 0 {
		t.Fatalf("dead letter not removed after replay: %d", len(dls))
	}
}

// TestReplayOfAReplayedDeadLetter: a second operator replaying from a list
// taken before the first replay is told so, and nothing is sent twice.
func TestReplayOfAReplayedDeadLetter(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(n int, _ *http.Request) (int, string) {
		if n == 1 {
			return 400, "" // rejected: dead-lettered at once
		}
		return 200, ""
	})
	nhs := validNHS(11)
	e.subscribe(t, "rest-hook", rc.srv.URL, hookCriteria(nhs))
	p := startPipeline(t, e, fast, BreakerConfig{})
	emit(t, e.ns.JS, nhs, "ev-twice", 1)
	rp := &Replayer{JS: e.ns.JS, Dead: p.st.Dead, Log: p.log, Subscriptions: e.store, Now: time.Now}
	var listed []DeadLetter
	waitFor(t, "dead letter after a 400", func() bool {
		listed, _ = rp.DeadLetters(context.Background(), Query{})
		return len(listed) == 1
	})
	if err := rp.Replay(context.Background(), listed[0]); err != nil {
		t.Fatal(err)
	}
	if err := rp.Replay(context.Background(), listed[0]); !errors.Is(err, ErrReplayedAlready) {
		t.Fatalf("second replay of the same dead letter: %v", err)
	}
	waitFor(t, "replayed delivery", func() bool { return len(rc.delivered()) == 1 })
	time.Sleep(200 * time.Millisecond) // a second copy would arrive within the fast schedule
	if n := len(rc.delivered()); n != 1 {
		t.Fatalf("%d deliveries after two replays, want 1", n)
	}
}

func TestReplayRefusedForInactiveSubscription(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(int, *http.Request) (int, string) { return 400, "" })
	nhs := validNHS(9)
	id := e.subscribe(t, "rest-hook", rc.srv.URL, hookCriteria(nhs))
	p := startPipeline(t, e, fast, BreakerConfig{})
	emit(t, e.ns.JS, nhs, "ev-400", 1)
	var dls []DeadLetter
	rp := &Replayer{JS: e.ns.JS, Dead: p.st.Dead, Log: p.log, Subscriptions: e.store, Now: time.Now}
	waitFor(t, "dead letter after a 400", func() bool {
		dls, _ = rp.DeadLetters(context.Background(), Query{})
		return len(dls) == 1
	})
	if dls[0].Reason != "rejected" || dls[0].Status != 400 || len(rc.all()) != 1 {
		t.Fatalf("a 400 is not retried: %+v, %d requests", dls[0], len(rc.all()))
	}
	if _, err := e.store.SetStatus(id, subscription.StatusOff, "test", "suspended"); err != nil {
		t.Fatal(err)
	}
	if err := rp.Replay(context.Background(), dls[0]); !errors.Is(err, ErrNotReplayable) {
		t.Fatalf("replay of an inactive subscription: %v", err)
	}
}

func TestGoneSetsSubscriptionError(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(int, *http.Request) (int, string) { return 410, "" })
	nhs := validNHS(3)
	id := e.subscribe(t, "rest-hook", rc.srv.URL, hookCriteria(nhs))
	p := startPipeline(t, e, fast, BreakerConfig{})
	emit(t, e.ns.JS, nhs, "ev-gone", 1)
	waitFor(t, "subscription in error", func() bool {
		s, err := e.store.Get(id)
		return err == nil && s.Status == subscription.StatusError
	})
	var rs []*Record
	waitFor(t, "dead-lettered as gone", func() bool {
		rs, _ = p.log.List(Query{State: StateDead})
		return len(rs) == 1
	})
	if rs[0].Reason != "gone" || len(rc.all()) != 1 {
		t.Fatalf("records %+v, requests %d", rs, len(rc.all()))
	}
}

func TestSSRFGuard(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer plain.Close()
	strict, _ := NewSender(SenderOptions{Timeout: time.Second})
	j := &Job{ID: "x", Endpoint: plain.URL, EventID: "e"}
	if res := strict.Send(context.Background(), j); res.Class != Rejected || res.Err == nil {
		t.Fatalf("loopback not refused: %+v", res)
	}
	// A public-looking name that redirects to loopback is refused at the hop.
	open, _ := NewSender(SenderOptions{Timeout: time.Second, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	redirect := httptest.NewServer(http.RedirectHandler("http://[::1]:1/x", http.StatusTemporaryRedirect))
	defer redirect.Close()
	if res := open.Send(context.Background(), &Job{ID: "y", Endpoint: redirect.URL}); res.Class != Rejected {
		t.Fatalf("redirect to ::1 not refused: %+v", res)
	}
	if res := open.Send(context.Background(), j); res.Class != Delivered {
		t.Fatalf("allowed loopback: %+v", res)
	}
	for _, bad := range []string{"10.1.2.3", "169.254.169.254", "192.168.0.1", "100.64.0.1", "::1", "fe80::1", "0.0.0.0"} {
		g := &ssrfGuard{}
		if g.permits(netip.MustParseAddr(bad)) {
			t.Errorf("%s permitted", bad)
		}
	}
	if !(&ssrfGuard{}).permits(netip.MustParseAddr("81.2.69.160")) {
		t.Error("public address refused")
	}
}

func TestOrderingPerPatient(t *testing.T) {
	// The size (20 patients × 100 events) with EMS_ORDERING_FULL=1.
	patients, perPatient := 8, 15
	if os.Getenv("EMS_ORDERING_FULL") != "" {
		patients, perPatient = 20, 100
	}
	e := newEnv(t)
	rnd := rand.New(rand.NewPCG(1, 2))
	var mu sync.Mutex
	rc := newReceiver(t, func(int, *http.Request) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		if rnd.IntN(4) == 0 {
			return 503, ""
		}
		return 200, ""
	})
	var nhss []string
	for i := range patients {
		nhs := validNHS(100 + i*7)
		nhss = append(nhss, nhs)
		e.subscribe(t, "rest-hook", rc.srv.URL, hookCriteria(nhs), "X-Nhs: "+nhs)
	}
	startPipeline(t, e, Policy{Backoff: Backoff{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond, Multiplier: 2},
		MaxAttempts: 50, MaxAge: time.Hour, RetryAfterMax: time.Second}, BreakerConfig{Failures: 1000})
	order := map[string]int{} // event id → publish index per patient
	for k := range perPatient {
		for _, nhs := range nhss {
			id := fmt.Sprintf("%s-%03d", nhs, k)
			order[id] = k
			emit(t, e.ns.JS, nhs, id, k)
		}
	}
	deadline := time.Now().Add(3 * time.Minute)
	for len(rc.delivered()) < patients*perPatient && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	last := map[string]int{}
	for _, g := range rc.delivered() {
		k := order[g.event]
		if prev, ok := last[g.nhs]; ok && k <= prev {
			t.Fatalf("patient %s: event %d delivered after %d", g.nhs, k, prev)
		}
		last[g.nhs] = k
	}
	if n := len(rc.delivered()); n != patients*perPatient {
		t.Fatalf("%d deliveries, want %d", n, patients*perPatient)
	}
	t.Logf("%d patients × %d events, %d requests (%d transient failures), per-patient order kept",
		patients, perPatient, len(rc.all()), len(rc.all())-len(rc.delivered()))
}

func TestDeadEndpointDoesNotDelayHealthy(t *testing.T) {
	e := newEnv(t)
	stop := make(chan struct{})
	dead := newReceiver(t, func(int, *http.Request) (int, string) {
		select {
		case <-time.After(1500 * time.Millisecond):
		case <-stop:
		}
		return 503, ""
	})
	t.Cleanup(func() { close(stop) })
	healthy := newReceiver(t, nil)
	var nhss []string
	for i := range 20 {
		nhs := validNHS(500 + i*3)
		nhss = append(nhss, nhs)
		e.subscribe(t, "rest-hook", dead.srv.URL, hookCriteria(nhs))
		e.subscribe(t, "rest-hook", healthy.srv.URL, hookCriteria(nhs))
	}
	startPipeline(t, e, Policy{Backoff: Backoff{Initial: 50 * time.Millisecond, Max: 100 * time.Millisecond, Multiplier: 2},
		MaxAttempts: 1000, MaxAge: time.Hour, RetryAfterMax: time.Second}, BreakerConfig{Failures: 3, Cooldown: 500 * time.Millisecond})
	start := time.Now()
	for i, nhs := range nhss {
		emit(t, e.ns.JS, nhs, fmt.Sprint("iso-", i), i)
	}
	waitFor(t, "healthy deliveries", func() bool { return len(healthy.delivered()) == len(nhss) })
	elapsed := time.Since(start)
	if elapsed > 3*time.Second {
		t.Fatalf("healthy endpoint took %v behind a dead one", elapsed)
	}
	t.Logf("healthy endpoint: %d deliveries in %v beside a dead endpoint (%d attempts there)", len(nhss), elapsed, len(dead.all()))
}

// One patient with a long backlog: only a few jobs park, the rest are
// paced back by JetStream, and the chain still drains promptly and in order.
func TestLongBacklogForOnePatient(t *testing.T) {
	const n = 300
	e := newEnv(t)
	rc := newReceiver(t, nil)
	nhs := validNHS(4242)
	e.subscribe(t, "rest-hook", rc.srv.URL, hookCriteria(nhs), "X-Nhs: "+nhs)
	startPipeline(t, e, fast, BreakerConfig{})
	for k := range n {
		emit(t, e.ns.JS, nhs, fmt.Sprintf("long-%04d", k), k)
	}
	start := time.Now()
	waitFor(t, "the backlog to drain", func() bool { return len(rc.delivered()) >= n })
	for i, g := range rc.delivered() {
		if want := fmt.Sprintf("long-%04d", i); g.event != want {
			t.Fatalf("delivery %d is %s, want %s", i, g.event, want)
		}
	}
	t.Logf("%d events for one patient delivered in order in %v", n, time.Since(start))
}
