package broker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
)

// startJetStream runs an embedded JetStream server in a temp dir, in
// process, as emsd does; it is cheap enough for every test.
func startJetStream(t testing.TB) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		JetStream: true, StoreDir: t.TempDir(), DontListen: true, NoSigs: true, NoLog: true,
		MaxPayload: 8 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := EnsureStream(context.Background(), js, StreamConfig{Name: "EMS_EVENTS", Retention: time.Hour, DuplicateWindow: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return js, stream
}

func newTestHandler(t testing.TB, mutate func(*Options)) (*Handler, jetstream.Stream) {
	t.Helper()
	js, stream := startJetStream(t)
	opts := Options{
		Publisher:      NewJetStreamPublisher(js),
		Catalog:        catalog.Default(),
		AllowJSON:      true,
		CheckNHSNumber: true,
		Logger:         discardLogger(),
	}
	if mutate != nil {
		mutate(&opts)
	}
	h, err := NewHandler(opts)
	if err != nil {
		t.Fatal(err)
	}
	return h, stream
}

func readExample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(examples, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func post(h http.Handler, body io.Reader, header http.Header, query string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, ProcessMessagePath+query, body)
	for k, v := range header {
		req.Header.Set(k, v[0])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func xmlHeader() http.Header { return http.Header{"Content-Type": {"application/fhir+xml"}} }

func TestPublishStoresOnceWithHeaders(t *testing.T) {
	h, stream := newTestHandler(t, nil)
	body := readExample(t, "vaccinations-1-new.xml")
	hdr := xmlHeader()
	hdr.Set("fromASID", "200000000118")
	for i := 0; i < 2; i++ { // the second is a publisher retry: stored once
		rec := post(h, bytes.NewReader(body), hdr, "")
		if rec.Code != http.StatusAccepted {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if got := rec.Header().Get("X-Event-Message-Id"); got != "85c8a1c5-a8a1-41c9-bb99-20956fa66218" {
			t.Fatalf("x-event-message-id = %q", got)
		}
		if rec.Body.Len() != 0 {
			t.Fatalf("202 with body: %s", rec.Body)
		}
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1", info.State.Msgs)
	}
	m, err := stream.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "ems.events.vaccinations-1.9912003888" {
		t.Fatalf("subject %q", m.Subject)
	}
	want := map[string]string{
		fhir.HeaderEventCode:        "vaccinations-1",
		fhir.HeaderNHSNumber:        "9912003888",
		fhir.HeaderMessageEventType: "new",
		fhir.HeaderPublisherASID:    "200000000118",
		fhir.HeaderContentType:      "application/fhir+xml",
		fhir.HeaderMessageID:        "85c8a1c5-a8a1-41c9-bb99-20956fa66218",
		"Nats-Msg-Id":               "85c8a1c5-a8a1-41c9-bb99-20956fa66218",
	}
	for k, v := range want {
		if got := m.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, m.Header.Get(fhir.HeaderReceivedAt)); err != nil {
		t.Errorf("received-at header: %v", err)
	}
	if !bytes.Equal(m.Data, body) {
		t.Error("stored body differs from the published one")
	}
}

func TestPublishJSON(t *testing.T) {
	h, stream := newTestHandler(t, nil)
	root, err := fhir.ParseXML(readExample(t, "newborn-hearing-1-new.xml"), fhir.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	js, err := fhir.MarshalJSON(root)
	if err != nil {
		t.Fatal(err)
	}
	rec := post(h, bytes.NewReader(js), http.Header{"Content-Type": {"application/fhir+json"}}, "")
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	m, err := stream.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(fhir.HeaderContentType) != "application/fhir+json" {
		t.Fatalf("content type header %q", m.Header.Get(fhir.HeaderContentType))
	}
}

func TestPublishRejections(t *testing.T) {
	valid := readExample(t, "vaccinations-1-new.xml")
	tests := []struct {
		name    string
		method  string
		body    []byte
		header  http.Header
		query   string
		status  int
		code    string
		format  string
		noStore bool
	}{
		{name: "GET", method: http.MethodGet, status: 405, format: "xml"},
		{name: "text/plain", body: valid, header: http.Header{"Content-Type": {"text/plain"}}, status: 415, code: "UNSUPPORTED_MEDIA_TYPE", format: "xml"},
		{name: "not XML", body: []byte("<Bundle xmlns=\"http://hl7.org/fhir\"><type value="), header: xmlHeader(), status: 400, code: "MESSAGE_NOT_WELL_FORMED", format: "xml"},
		{name: "not a bundle", body: []byte(`<Patient xmlns="http://hl7.org/fhir"><id value="x"/></Patient>`), header: xmlHeader(), status: 400, code: "MESSAGE_NOT_WELL_FORMED", format: "xml"},
		{name: "JSON answer by _format", body: []byte("{"), header: http.Header{"Content-Type": {"application/fhir+json"}}, query: "?_format=json", status: 400, code: "MESSAGE_NOT_WELL_FORMED", format: "json"},
		{name: "JSON answer by Accept", body: readExample(t, "nipe-outcome-1-update.xml"), header: http.Header{"Accept": {"application/fhir+json"}}, status: 400, code: "INVALID_VALUE", format: "json"},
		{name: "no content type is XML", body: readExample(t, "nipe-outcome-1-update.xml"), status: 400, code: "INVALID_VALUE", format: "xml"},
		{name: "interaction mismatch", body: valid, header: http.Header{"InteractionID": {"urn:nhs:names:services:events:Newbornhearing.Write"}}, status: 400, code: "MISSING_OR_INVALID_HEADER", format: "xml"},
	}
	h, stream := newTestHandler(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, ProcessMessagePath+tt.query, bytes.NewReader(tt.body))
			for k, v := range tt.header {
				req.Header.Set(k, v[0])
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			ct := rec.Header().Get("Content-Type")
			if !strings.Contains(ct, "fhir+"+tt.format) {
				t.Fatalf("content type %q, want %s", ct, tt.format)
			}
			if tt.code != "" && !strings.Contains(rec.Body.String(), tt.code) {
				t.Fatalf("body lacks %s: %s", tt.code, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), "OperationOutcome") {
				t.Fatalf("not an OperationOutcome: %s", rec.Body)
			}
		})
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("rejected messages were stored: %d", info.State.Msgs)
	}
}

func TestOversizeRefusedWithoutReading(t *testing.T) {
	h, _ := newTestHandler(t, func(o *Options) { o.MaxBodyBytes = 1024 })
	// A declared length over the limit is refused before the body is read.
	body := &countingReader{r: bytes.NewReader(make([]byte, 50<<20))}
	req := httptest.NewRequest(http.MethodPost, ProcessMessagePath, body)
	req.ContentLength = 50 << 20
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge || body.n != 0 {
		t.Fatalf("status %d after reading %d bytes", rec.Code, body.n)
	}
	if !strings.Contains(rec.Body.String(), "INVALID_REQUEST_MESSAGE") {
		t.Fatalf("body: %s", rec.Body)
	}
	// A chunked body is cut at the limit.
	body = &countingReader{r: bytes.NewReader(make([]byte, 50<<20))}
	req = httptest.NewRequest(http.MethodPost, ProcessMessagePath, body)
	req.ContentLength = -1
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge || body.n > 64<<10 {
		t.Fatalf("chunked: status %d after reading %d bytes", rec.Code, body.n)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestDeprecatedWarning(t *testing.T) {
	cat, err := catalog.Default().Apply(map[string]catalog.Override{
		"vaccinations-1": {State: catalog.Deprecated, DeprecationDate: time.Date(2027, 3, 31, 0, 0, 0, 0, time.UTC), InfoURL: "https://example.org/vacc"},
	})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := newTestHandler(t, func(o *Options) { o.Catalog = cat })
	rec := post(h, bytes.NewReader(readExample(t, "vaccinations-1-new.xml")), xmlHeader(), "")
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	for _, want := range []string{"DEPRECATED", "information", "informational", "31/03/2027", "https://example.org/vacc", "Vaccinations (vaccinations-1)"} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("body lacks %q: %s", want, rec.Body)
		}
	}
}

func TestStoreFailureIs500(t *testing.T) {
	failing := PublisherFunc(func(context.Context, Event) (PublishResult, error) {
		return PublishResult{}, errors.New("jetstream unavailable")
	})
	h, err := NewHandler(Options{Publisher: failing, Catalog: catalog.Default(), CheckNHSNumber: true, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	rec := post(h, bytes.NewReader(readExample(t, "vaccinations-1-new.xml")), xmlHeader(), "")
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "INTERNAL_SERVER_ERROR") {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
}

func TestJSONRefusedWhenDisabled(t *testing.T) {
	h, _ := newTestHandler(t, func(o *Options) { o.AllowJSON = false })
	rec := post(h, strings.NewReader("{}"), http.Header{"Content-Type": {"application/fhir+json"}}, "")
	if rec.Code != http.StatusUnsupportedMediaType {
		t.Fatalf("status %d", rec.Code)
	}
}

// grantOnly is an Authorizer admitting one ASID for one event.
type grantOnly struct{ asid, ods, event string }

func (g grantOnly) AuthorizePublish(r *http.Request, ev catalog.Event) (Caller, *fhir.Issue) {
	c := Caller{ASID: r.Header.Get("fromASID"), ODS: g.ods}
	if c.ASID != g.asid || ev.Code != g.event {
		return c, &fhir.Issue{Severity: fhir.SeverityError, Code: fhir.AccessDenied, Diagnostics: "not granted"}
	}
	return c, nil
}

// TestAuthorizerDecides shows the handler storing only what its Authorizer
// admits, with the caller's ODS code on the stored message.
func TestAuthorizerDecides(t *testing.T) {
	h, stream := newTestHandler(t, func(o *Options) {
		o.Authorizer = grantOnly{asid: "200000000118", ods: "RA9", event: "vaccinations-1"}
	})
	for _, tt := range []struct {
		asid, file string
		status     int
	}{
		{"200000000118", "vaccinations-1-new.xml", 202},
		{"200000000118", "newborn-hearing-1-new.xml", 403},
		{"999999999999", "vaccinations-1-update.xml", 403},
	} {
		hdr := xmlHeader()
		hdr.Set("fromASID", tt.asid)
		rec := post(h, bytes.NewReader(readExample(t, tt.file)), hdr, "")
		if rec.Code != tt.status {
			t.Fatalf("%s by %s: %d %s", tt.file, tt.asid, rec.Code, rec.Body)
		}
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 || m.Header.Get(fhir.HeaderPublisherODS) != "RA9" {
		t.Fatalf("stored %d, publisher ODS %q", info.State.Msgs, m.Header.Get(fhir.HeaderPublisherODS))
	}
}

// TestOverloadShedsWithoutReading: beyond MaxInFlight a request waits at
// most QueueWait, then gets 429 with Retry-After, its body unread.
func TestOverloadShedsWithoutReading(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	blocking := PublisherFunc(func(ctx context.Context, e Event) (PublishResult, error) {
		entered <- struct{}{}
		<-release
		return PublishResult{Sequence: 1}, nil
	})
	h, err := NewHandler(Options{Publisher: blocking, Catalog: catalog.Default(), CheckNHSNumber: true, Logger: discardLogger(),
		MaxInFlight: 1, QueueWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	body := readExample(t, "vaccinations-1-new.xml")
	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- post(h, bytes.NewReader(body), xmlHeader(), "") }()
	<-entered // the only slot is held

	unread := &countingReader{r: bytes.NewReader(body)}
	start := time.Now()
	rec := post(h, unread, xmlHeader(), "")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1" || !strings.Contains(rec.Body.String(), `<code value="throttled"/>`) {
		t.Fatalf("status %d, Retry-After %q: %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond || waited > 5*time.Second {
		t.Errorf("refused after %v, want about the 50ms queue wait", waited)
	}
	if unread.n != 0 {
		t.Errorf("%d body bytes read from a refused request", unread.n)
	}

	close(release)
	if rec := <-first; rec.Code != http.StatusAccepted {
		t.Fatalf("the request holding the slot: status %d: %s", rec.Code, rec.Body)
	}
	// The slot is free again.
	if rec := post(h, bytes.NewReader(body), xmlHeader(), ""); rec.Code != http.StatusAccepted {
		t.Fatalf("after the release: status %d: %s", rec.Code, rec.Body)
	}
}
