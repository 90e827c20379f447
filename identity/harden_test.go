package identity

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ems-broker/ems/fhir"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := NewLimiter(2, 3, func() time.Time { return now })
	for i := 0; i < 3; i++ {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("burst request %d refused", i)
		}
	}
	ok, wait := l.Allow("a")
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("4th request: ok=%v wait=%v, want refused for 500ms", ok, wait)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another caller shares the bucket")
	}
	now = now.Add(500 * time.Millisecond)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("token not refilled")
	}
	if NewLimiter(0, 0, nil) != nil {
		t.Fatal("rate 0 is not unlimited")
	}
	var unlimited *Limiter
	if ok, _ := unlimited.Allow("x"); !ok {
		t.Fatal("nil limiter refused")
	}
}

func TestLimiterBoundedUnderKeyFlood(t *testing.T) {
	now := time.Unix(0, 0)
	l := NewLimiter(1, 1, func() time.Time { return now })
	for i := 0; i < maxBuckets+10; i++ {
		l.Allow(string(rune(i)) + "k")
	}
	if n := len(l.buckets); n > maxBuckets {
		t.Fatalf("%d buckets kept, cap %d", n, maxBuckets)
	}
}

func TestMaskNHS(t *testing.T) {
	for in, want := range map[string]string{
		"9434765919":                           "*******919",
		"patient 943 476 5919 moved":           "patient *** *** *919 moved",
		"943-476-5919":                         "***-***-*919",
		"ems.events.vaccinations-1.9434765919": "ems.events.vaccinations-1.*******919",
		"nhs=9434765919,9999999468":            "nhs=*******919,*******468",
		"asid 200000000001":                    "asid 200000000001", // 12 digits: not an NHS number
		"id a9434765919":                       "id a9434765919",
		"94347659190":                          "94347659190",
		"short 12345":                          "short 12345",
	} {
		if got := MaskNHS(in); got != want {
			t.Errorf("MaskNHS(%q) = %q, want %q", in, got, want)
		}
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: MaskNHSNumbers}))
	log.Info("routing 9434765919", "nhs_number", "9434765919", "err", errString("no subscriber for 9434765919"), "nhs", 9434765919, "unix", 1763800000)
	if out := buf.String(); strings.Contains(out, "9434765") {
		t.Fatalf("NHS number in log: %s", out)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestHarden(t *testing.T) {
	var reached int
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached++
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(r.Body); err != nil {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		setRetryAfter(r, 1500*time.Millisecond)
		w.WriteHeader(http.StatusNoContent)
	})
	h := Harden(next, HardenOptions{MaxBodyBytes: 100, PerClient: NewLimiter(1, 2, nil), Logger: quietLog()})
	do := func(r *http.Request) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	req := func(remote string, body string, hdr ...string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/STU3/Subscription", strings.NewReader(body))
		r.RemoteAddr = remote + ":1234"
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header[hdr[i]] = []string{hdr[i+1]}
		}
		return r
	}
	w := do(req("10.0.0.1", "ok"))
	if w.Code != http.StatusNoContent || w.Header().Get("Retry-After") != "2" {
		t.Fatalf("clean request: %d Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	for name, tt := range map[string]struct {
		r    *http.Request
		code int
		want string
	}{
		"invalid UTF-8 header":  {req("10.0.0.2", "", "Fromasid", "20000\xff0001"), 400, "BAD_REQUEST"},
		"NUL in header":         {req("10.0.0.3", "", "X-A", "a\x00b"), 400, "BAD_REQUEST"},
		"invalid UTF-8 in path": {httptest.NewRequest(http.MethodGet, "/STU3/Subscription/%ff", nil), 400, "BAD_REQUEST"},
		"NUL in query":          {httptest.NewRequest(http.MethodGet, "/STU3/Subscription?status=%00", nil), 400, "BAD_REQUEST"},
		"declared too large":    {req("10.0.0.4", strings.Repeat("x", 101)), 413, "INVALID_REQUEST_MESSAGE"},
	} {
		w := do(tt.r)
		if w.Code != tt.code || !strings.Contains(w.Body.String(), tt.want) || !strings.Contains(w.Body.String(), "OperationOutcome") {
			t.Errorf("%s: %d %s", name, w.Code, w.Body.String())
		}
	}
	// A body without Content-Length is cut at the cap by the handler's read.
	r := req("10.0.0.5", "")
	r.Body, r.ContentLength = http.NoBody, -1
	r.Body = struct {
		*strings.Reader
		closer
	}{strings.NewReader(strings.Repeat("x", 1000)), closer{}}
	if w := do(r); w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked oversize body: %d", w.Code)
	}
	// Per-address rate: burst 2, then 429 with Retry-After.
	for i := 0; i < 2; i++ {
		do(req("10.0.0.9", ""))
	}
	w = do(req("10.0.0.9", ""))
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "throttled") {
		t.Fatalf("over rate: %d %q %s", w.Code, w.Header().Get("Retry-After"), w.Body.String())
	}
	_ = fhir.TooManyRequests
}

type closer struct{}

func (closer) Close() error { return nil }

func TestHardenAudit(t *testing.T) {
	a := testAuth(t, false)
	var got []AuditRecord
	ident := SubscriptionIdentifier{Auth: a}
	h := Harden(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, o := ident.Identify(r); o != nil {
			WriteOutcome(w, r, o)
			return
		}
		if r.Method == http.MethodDelete {
			w.WriteHeader(http.StatusOK)
			return
		}
		_, _ = w.Write([]byte("{}"))
	}), HardenOptions{Logger: quietLog(), Audit: func(rec AuditRecord) { got = append(got, rec) }})
	call := func(method, path, asid string) {
		r := httptest.NewRequest(method, path, nil)
		if asid != "" {
			r.Header.Set("fromASID", asid)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	call(http.MethodGet, "/STU3/Subscription/abc", subASID)    // read: not audited
	call(http.MethodDelete, "/STU3/Subscription/abc", subASID) // change: audited
	call(http.MethodGet, "/STU3/Subscription/abc", otherASID)  // refusal: audited
	call(http.MethodGet, "/STU3/Subscription/\xff", "")        // hardening refusal: audited
	if len(got) != 3 {
		t.Fatalf("%d records: %+v", len(got), got)
	}
	if r := got[0]; r.ASID != subASID || r.ODS != "RX1" || r.Method != http.MethodDelete || r.Status != 200 || r.Operation != "subscription.delete" {
		t.Errorf("change: %+v", r)
	}
	if r := got[1]; r.ASID != otherASID || r.Status != 403 || r.Code != "ASID_CHECK_FAILED" {
		t.Errorf("refusal: %+v", r)
	}
	if r := got[2]; r.Status != 400 || r.Code != "BAD_REQUEST" {
		t.Errorf("hardening refusal: %+v", r)
	}
}

func TestAuditQueueDropsInsteadOfBlocking(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	release := make(chan struct{})
	var stored atomic.Int64
	q, wait := NewAuditQueue(ctx, 2, func(recs []AuditRecord) error { <-release; stored.Add(int64(len(recs))); return nil }, quietLog())
	start := time.Now()
	for i := 0; i < 100; i++ {
		q.Add(AuditRecord{Path: "/x"})
	}
	if time.Since(start) > time.Second {
		t.Fatal("Add blocked on a stuck store")
	}
	close(release)
	cancel()
	wait()
	// The writer holds one batch (at most the queue's 2 plus the one it
	// took) while the queue fills again.
	if n := stored.Load(); n < 2 || n > 5 {
		t.Fatalf("%d records stored from a queue of 2 (+ a batch in flight)", n)
	}
}
