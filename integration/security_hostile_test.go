package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/identity"
)

// hostileLimit is how long a refusal may take: each must be decided from a
// bounded prefix of the input, never by processing all of it.
const hostileLimit = 3 * time.Second

// vmHWM reads the peak resident set size of pid, in KiB.
func vmHWM(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// lazyReader yields n bytes of filler without holding them in memory.
type lazyReader struct {
	prefix []byte
	n      int64
}

func (r *lazyReader) Read(p []byte) (int, error) {
	if len(r.prefix) > 0 {
		k := copy(p, r.prefix)
		r.prefix = r.prefix[k:]
		return k, nil
	}
	if r.n <= 0 {
		return 0, io.EOF
	}
	k := int64(len(p))
	if k > r.n {
		k = r.n
	}
	for i := range p[:k] {
		p[i] = 'a'
	}
	r.n -= k
	return int(k), nil
}

func billionLaughs() string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0"?><!DOCTYPE Bundle [<!ENTITY lol0 "lololololololololololol">`)
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, `<!ENTITY lol%d "%s">`, i, strings.Repeat(fmt.Sprintf("&lol%d;", i-1), 10))
	}
	b.WriteString(`]><Bundle xmlns="http://hl7.org/fhir"><id value="&lol9;"/></Bundle>`)
	return b.String()
}

func TestSecurityHostileInputs(t *testing.T) {
	s := startSecure(t, false)
	e := s.e
	pid := e.cmd.Process.Pid
	baseline := vmHWM(t, pid)

	pubHeaders := func(ct string) map[string]string {
		h := spine(secPublisher, vaccinationsInteraction, s.token(t, claims(secPublisher, "PUB01", identity.PublishScope)))
		if ct != "" {
			h["Content-Type"] = ct
		}
		return h
	}
	subHeaders := func(ct string) map[string]string {
		h := spine(secSubA, identity.SubscriptionPostAction, s.token(t, claims(secSubA, "SUBA", identity.SubscriptionWriteScope)))
		if ct != "" {
			h["Content-Type"] = ct
		}
		return h
	}
	const publishPath = "/STU3/Events/1/$process-message"
	const subPath = "/STU3/Subscription"
	deepXML := `<Bundle xmlns="http://hl7.org/fhir">` + strings.Repeat("<entry>", 100_000) + strings.Repeat("</entry>", 100_000) + `</Bundle>`
	deepJSON := `{"resourceType":"Bundle","entry":` + strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000) + `}`
	// The Subscription API reads at most 64 KiB, so 30k levels is as deep
	// as a body it parses can be.
	deepSubJSON := `{"resourceType":"Subscription","reason":` + strings.Repeat("[", 30_000) + strings.Repeat("]", 30_000) + `}`
	xxe := `<?xml version="1.0"?><!DOCTYPE Bundle [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><Bundle xmlns="http://hl7.org/fhir"><id value="&xxe;"/></Bundle>`
	xxeParam := `<?xml version="1.0"?><!DOCTYPE Bundle [<!ENTITY % ext SYSTEM "http://127.0.0.1:1/evil.dtd"> %ext;]><Bundle xmlns="http://hl7.org/fhir"/>`
	pi := `<?xml version="1.0"?><?xml-stylesheet href="http://127.0.0.1:1/x.xsl"?><Bundle xmlns="http://hl7.org/fhir"><type value="message"/></Bundle>`
	hugeNumber := `{"resourceType":"Bundle","type":"message","total":1` + strings.Repeat("0", 100_000) + `}`
	hugeExponent := `{"resourceType":"Bundle","type":"message","total":1e999999999}`
	dupKeys := `{"resourceType":"Bundle","type":"message","type":"collection"}`
	dupSubKeys := `{"resourceType":"Subscription","criteria":"/Bundle?type=message&MessageHeader.event=pds-change-of-gp-1","criteria":"x"}`
	wideArray := `{"resourceType":"Bundle","type":"message","entry":[` + strings.Repeat(`{},`, 400_000) + `{}]}`

	cases := []struct {
		name    string
		path    string
		headers map[string]string
		body    io.Reader
		length  int64 // -1: chunked
	}{
		{"billion laughs (publish)", publishPath, pubHeaders("application/fhir+xml"), strings.NewReader(billionLaughs()), 0},
		{"billion laughs (subscription)", subPath, subHeaders("application/fhir+xml"), strings.NewReader(strings.ReplaceAll(billionLaughs(), "Bundle", "Subscription")), 0},
		{"external entity", publishPath, pubHeaders("application/fhir+xml"), strings.NewReader(xxe), 0},
		{"external parameter entity", publishPath, pubHeaders("application/fhir+xml"), strings.NewReader(xxeParam), 0},
		{"processing instruction", publishPath, pubHeaders("application/fhir+xml"), strings.NewReader(pi), 0},
		{"100k-deep XML", publishPath, pubHeaders("application/fhir+xml"), strings.NewReader(deepXML), 0},
		{"100k-deep JSON", publishPath, pubHeaders("application/fhir+json"), strings.NewReader(deepJSON), 0},
		{"30k-deep JSON (subscription)", subPath, subHeaders("application/fhir+json"), strings.NewReader(deepSubJSON), 0},
		{"50 MB declared (publish)", publishPath, pubHeaders("application/fhir+xml"), &lazyReader{n: 50 << 20}, 50 << 20},
		{"50 MB declared (subscription)", subPath, subHeaders("application/fhir+xml"), &lazyReader{n: 50 << 20}, 50 << 20},
		{"50 MB chunked (publish)", publishPath, pubHeaders("application/fhir+xml"), &lazyReader{prefix: []byte(`<Bundle xmlns="http://hl7.org/fhir"><id value="`), n: 50 << 20}, -1},
		{"50 MB chunked (subscription)", subPath, subHeaders("application/fhir+json"), &lazyReader{prefix: []byte(`{"resourceType":"Subscription","reason":"`), n: 50 << 20}, -1},
		{"50 MB chunked (MESH API)", "/messageexchange/SUBA_MB", map[string]string{}, &lazyReader{n: 50 << 20}, -1},
		{"invalid UTF-8 (XML)", publishPath, pubHeaders("application/fhir+xml"), strings.NewReader("<Bundle xmlns=\"http://hl7.org/fhir\"><id value=\"\xff\xfe\xfd\"/></Bundle>"), 0},
		{"invalid UTF-8 (JSON)", subPath, subHeaders("application/fhir+json"), strings.NewReader("{\"resourceType\":\"Subscription\",\"reason\":\"\xc3\x28\"}"), 0},
		{"NUL byte (XML)", publishPath, pubHeaders("application/fhir+xml"), strings.NewReader("<Bundle xmlns=\"http://hl7.org/fhir\"><id value=\"a\x00b\"/></Bundle>"), 0},
		{"NUL byte (JSON)", subPath, subHeaders("application/fhir+json"), strings.NewReader("{\"resourceType\":\"Subscription\",\"reason\":\"a\\u0000b\"}"), 0},
		{"huge number", publishPath, pubHeaders("application/fhir+json"), strings.NewReader(hugeNumber), 0},
		{"huge exponent", publishPath, pubHeaders("application/fhir+json"), strings.NewReader(hugeExponent), 0},
		{"duplicate JSON keys", publishPath, pubHeaders("application/fhir+json"), strings.NewReader(dupKeys), 0},
		{"duplicate JSON keys (subscription)", subPath, subHeaders("application/fhir+json"), strings.NewReader(dupSubKeys), 0},
		{"400k-element array", publishPath, pubHeaders("application/fhir+json"), strings.NewReader(wideArray), 0},
		{"invalid UTF-8 header", publishPath, func() map[string]string {
			h := pubHeaders("application/fhir+xml")
			h["fromASID"] = "2000\xff0000201"
			return h
		}(), strings.NewReader("<Bundle/>"), 0},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, e.baseURL()+tt.path, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.headers {
				req.Header[http.CanonicalHeaderKey(k)] = []string{v}
			}
			switch {
			case tt.length > 0:
				req.ContentLength = tt.length
			case tt.length < 0:
				req.ContentLength = -1
				req.Body = io.NopCloser(tt.body) // hide the length: chunked
			}
			start := time.Now()
			resp, err := http.DefaultClient.Do(req)
			took := time.Since(start)
			if err != nil {
				// The server may close the connection on an oversized body
				// before the client has written it all; what matters is
				// that it stopped reading early.
				if tt.length != 0 && took < hostileLimit {
					t.Logf("%s: connection closed by the server after %s (%v)", tt.name, took.Round(time.Millisecond), err)
					return
				}
				t.Fatalf("%s: %v after %s", tt.name, err, took)
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			t.Logf("%s: %d in %s", tt.name, resp.StatusCode, took.Round(time.Millisecond))
			if resp.StatusCode < 400 || resp.StatusCode >= 500 {
				t.Errorf("%s: status %d, want a 4xx refusal: %s", tt.name, resp.StatusCode, truncate(string(body), 300))
			}
			if tt.path != "/messageexchange/SUBA_MB" && !bytes.Contains(body, []byte("OperationOutcome")) {
				t.Errorf("%s: no OperationOutcome: %s", tt.name, truncate(string(body), 300))
			}
			if bytes.Contains(body, []byte("root:")) {
				t.Errorf("%s: the answer shows /etc/passwd", tt.name)
			}
			if took > hostileLimit {
				t.Errorf("%s: took %s", tt.name, took)
			}
		})
	}

	// Headers net/http's client will not send: NUL and CR in a header
	// value, written on a raw connection.
	for name, line := range map[string]string{
		"NUL in header": "fromASID: 2000\x000000201",
		"CR in header":  "fromASID: 200000000201\rX-Injected: 1",
	} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.baseURL(), "http://"))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\n%s\r\nContent-Length: 0\r\n\r\n", publishPath, line)
		_ = conn.SetReadDeadline(time.Now().Add(hostileLimit))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else {
			t.Logf("%s: %d in %s (refused by net/http before any handler)", name, resp.StatusCode, time.Since(start).Round(time.Millisecond))
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: %d", name, resp.StatusCode)
			}
		}
		conn.Close()
	}

	peak := vmHWM(t, pid)
	t.Logf("emsd peak RSS (VmHWM): %d KiB after start-up, %d KiB after the hostile inputs", baseline, peak)
	// Bounded: 50 MB bodies and exponential entities must not have been
	// materialised. 256 MiB leaves room for the race detector's shadow
	// memory.
	if peak > 256<<10 {
		t.Errorf("peak RSS %d KiB: hostile input was buffered", peak)
	}
	// Still serving.
	vacc, _, _ := withNewID(t, fixture(t, "nems-examples/vaccinations-1-new.xml"), fhir.FormatXML)
	if resp, b := e.post(t, publishPath, vacc, pubHeaders("application/fhir+xml")); resp.StatusCode != http.StatusAccepted {
		t.Errorf("after the hostile inputs a good publish gets %d %s", resp.StatusCode, b)
	}
}
