package main

import (
	"bytes"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/ems-broker/ems/delivery"
)

func TestEveryCommandHasAnExample(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() != "help" && c.Example == "" {
			t.Errorf("%q has no example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd(&globals{}))
}

func TestAdminFailure(t *testing.T) {
	for _, tc := range []struct {
		status   int
		ctype    string
		body     string
		wantCode int
		wantMsg  string
	}{
		{404, "application/json", `{"error":"subscription x not found"}`, exitNotFound, "GET /p: subscription x not found"},
		{400, "application/json", `{"error":"status: \"x\" is not requested"}`, exitUsage, `GET /p: status: "x" is not requested`},
		{409, "application/json", `{"error":"status change not allowed"}`, exitFailure, "GET /p: status change not allowed"},
		{401, "application/json", `{"error":"a valid operator token is required"}`, exitFailure, "refused the operator token"},
		{500, "application/json", `{"error":"disk full"}`, exitFailure, "GET /p: disk full"},
		{404, "text/plain; charset=utf-8", "404 page not found\n", exitFailure, "no such admin route"},
		{405, "text/plain; charset=utf-8", "Method Not Allowed\n", exitFailure, "no such admin route"},
		{502, "text/html", "<html>bad gateway</html>", exitFailure, "502 Bad Gateway: <html>bad gateway</html>"},
	} {
		resp := &http.Response{StatusCode: tc.status, Status: strconv.Itoa(tc.status) + " " + http.StatusText(tc.status),
			Header: http.Header{"Content-Type": {tc.ctype}}}
		err := adminFailure("GET", "/p", resp, []byte(tc.body))
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != tc.wantCode || !strings.Contains(err.Error(), tc.wantMsg) {
			t.Errorf("%d %s: got %v (code %v), want code %d containing %q", tc.status, tc.body, err, ee, tc.wantCode, tc.wantMsg)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%d: error spans lines: %q", tc.status, err)
		}
	}
}

func TestOutcomeText(t *testing.T) {
	jsonOO := `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"value","details":{"coding":[{"system":"https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1","code":"INVALID_NHS_NUMBER"}]},"diagnostics":"NHS number fails the check digit","expression":["Bundle.entry[1]"]}]}`
	xmlOO := `<OperationOutcome xmlns="http://hl7.org/fhir"><issue><severity value="error"/><code value="forbidden"/><details><coding><code value="ASID_CHECK_FAILED"/></coding></details><diagnostics value="unknown ASID"/></issue></OperationOutcome>`
	for _, tc := range []struct{ in, want string }{
		{jsonOO, "INVALID_NHS_NUMBER NHS number fails the check digit (at Bundle.entry[1])"},
		{xmlOO, "ASID_CHECK_FAILED unknown ASID"},
		{"plain failure\n", "plain failure"},
	} {
		if got := outcomeText([]byte(tc.in)); got != tc.want {
			t.Errorf("outcomeText(%.30q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSinceFlag(t *testing.T) {
	var s sinceFlag
	if err := s.Set("2026-11-22T10:00:00Z"); err != nil || s.t != time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC) {
		t.Errorf("RFC 3339: %v %v", s.t, err)
	}
	before := time.Now()
	if err := s.Set("2h"); err != nil || s.t.After(before.Add(-2*time.Hour+time.Second)) || s.t.Before(before.Add(-2*time.Hour-time.Second)) {
		t.Errorf("duration: %v %v", s.t, err)
	}
	if err := s.Set("yesterday"); err == nil {
		t.Error("accepted yesterday")
	}
}

func TestEndpointRows(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	hook := "https://hooks.example.org/ems"
	recs := []*delivery.Record{
		{Endpoint: hook, Channel: "rest-hook", State: delivery.StateDead, Attempts: []delivery.Attempt{
			{At: t0, Outcome: "delivered", Status: 200}, {At: t0.Add(time.Minute), Outcome: "retry", Status: 503}}},
		{Endpoint: hook, Channel: "rest-hook", State: delivery.StateRetrying},
		{Endpoint: "MBA01", Channel: "message", State: delivery.StateDelivered},
	}
	breakers := map[string]string{delivery.EndpointToken("rest-hook", hook): "open", "0123456789abcdef": "half-open"}
	got := endpointRows(breakers, recs)
	if len(got) != 3 {
		t.Fatalf("%d rows: %+v", len(got), got)
	}
	// Sorted by endpoint: the unnamed breaker's token, the mailbox, the hook.
	if got[0].Endpoint != "0123456789abcdef" || got[0].Breaker != "half-open" {
		t.Errorf("breaker without deliveries: %+v", got[0])
	}
	if got[1].Endpoint != "MBA01" || got[1].Breaker != "closed" || got[1].Backlog != 0 {
		t.Errorf("mailbox: %+v", got[1])
	}
	h := got[2]
	if h.Breaker != "open" || h.Backlog != 1 || h.Dead != 1 || !h.LastSuccess.Equal(t0) || !h.LastFailure.Equal(t0.Add(time.Minute)) || h.LastError != "503" {
		t.Errorf("hook: %+v", h)
	}
}

func TestProgressLine(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	p := newProgress(strings.NewReader(strings.Repeat("a,b\n", 1000)), 4000, &bytes.Buffer{})
	p.now = func() time.Time { return now }
	p.start = now
	buf := make([]byte, 1000)
	if _, err := p.Read(buf); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Second)
	want := "[=======                       ]  25% 250 rows  125 rows/s  ETA 6s"
	if got := p.line(); got != want {
		t.Errorf("line = %q, want %q", got, want)
	}
}

func TestWriteYAMLKeepsNumbersAndOrderOfArrays(t *testing.T) {
	var b bytes.Buffer
	if err := writeYAML(&b, []byte(`{"b":[3,1.5],"a":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), "a: x\nb:\n  - 3\n  - 1.5\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestRunExitCodes(t *testing.T) {
	valid := "../../testdata/nems-examples/PDS-Change-Of-GP-ems-example.xml"
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"--version"}, exitOK},
		{[]string{"event", "validate", valid}, exitOK},
		{[]string{"event", "validate", "main_test.go"}, exitFailure},
		{[]string{"nonsense"}, exitUsage},
		{[]string{"subscription", "get"}, exitUsage},
		{[]string{"subscription", "list", "--limit", "many"}, exitUsage},
		{[]string{"-o", "toml", "event", "validate", valid}, exitUsage},
		{[]string{"--server", "ftp://x", "event", "validate", valid}, exitUsage},
		{[]string{"--token", "", "subscription", "list"}, exitUsage},
		{[]string{"replay"}, exitUsage},
	} {
		t.Setenv("XDG_CONFIG_HOME", t.TempDir())
		t.Setenv("EMS_TOKEN", "")
		var out, errb bytes.Buffer
		if got := run(tc.args, strings.NewReader(""), &out, &errb); got != tc.want {
			t.Errorf("emsctl %v: exit %d, want %d\n%s%s", tc.args, got, tc.want, out.String(), errb.String())
		}
	}
}

func TestCallerFlags(t *testing.T) {
	f := callerFlags{asid: "200000000118", interaction: "urn:x", headers: []string{"Ssp-TraceID: 0a1b", "X-Empty:"}}
	req, _ := http.NewRequest(http.MethodPost, "http://x", nil)
	if err := f.apply(req, func(k string) string { return map[string]string{"EMS_JWT": "e.y.j"}[k] }); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"fromASID": "200000000118", "InteractionID": "urn:x", "Ssp-Traceid": "0a1b",
		"Authorization": "Bearer e.y.j", "toASID": ""}
	for k, v := range want {
		if got := req.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	bad := callerFlags{headers: []string{"no colon"}}
	if err := bad.apply(req, func(string) string { return "" }); err == nil {
		t.Error(`accepted a header without ":"`)
	}
}

func TestPainter(t *testing.T) {
	tb := newTable("ID", "STATUS")
	tb.add("a", "active")
	tb.add("b", "error")
	var plain, painted bytes.Buffer
	if err := (painter{}).writeTable(&plain, tb); err != nil {
		t.Fatal(err)
	}
	if err := (painter{on: true}).writeTable(&painted, tb); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(plain.String(), "\x1b") {
		t.Errorf("plain table has escapes: %q", plain.String())
	}
	for _, want := range []string{"\x1b[1mID", "\x1b[32mactive\x1b[0m", "\x1b[31merror\x1b[0m"} {
		if !strings.Contains(painted.String(), want) {
			t.Errorf("painted table lacks %q: %q", want, painted.String())
		}
	}
	// Escapes are added after alignment: stripping them gives the plain table.
	stripped := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(painted.String(), "")
	if stripped != plain.String() {
		t.Errorf("painting changed the layout:\n%q\n%q", stripped, plain.String())
	}
}
