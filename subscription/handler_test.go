package subscription

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
	bolt "go.etcd.io/bbolt"
)

const (
	asidRR8     = "200000000100"
	asidX26     = "200000000200"
	asidLimited = "200000000300"
	critGP      = base + "&Patient.identifier=http://fhir.nhs.net/Id/nhs-number|" + nhsB + "&MessageHeader.event=pds-change-of-address-1"
	critCountry = base + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=COUNTRYCODE&Organization.identifier=E92000001"
)

type apiFixture struct {
	h     *Handler
	srv   *httptest.Server
	clock time.Time
}

func newAPI(t *testing.T, policy Policy) *apiFixture {
	t.Helper()
	f := &apiFixture{clock: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	db, err := bolt.Open(filepath.Join(t.TempDir(), "api.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	no := false
	cat, err := catalog.Default().Apply(map[string]catalog.Override{
		"newborn-hearing-1":         {State: catalog.Deprecated, DeprecationDate: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		"nipe-outcome-1":            {State: catalog.Deprecated},
		"blood-spot-test-outcome-1": {State: catalog.Withdrawn},
		"professional-contacts-1":   {State: catalog.NoLongerSupported},
		"observations-1":            {Enabled: &no},
	})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := NewRegistryIdentifier(map[string]RegistryEntry{
		asidRR8:     {ODS: "RR8", Mailboxes: []string{"MBX001", "MBX002"}},
		asidX26:     {ODS: "X26", Mailboxes: []string{"X26MBX"}},
		asidLimited: {ODS: "RR8", SubscribeEvents: []string{"vaccinations-1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.h, err = NewHandler(Options{DB: db, Catalog: cat, Identifier: reg, Now: func() time.Time { return f.clock }, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(PathPrefix, f.h)
	mux.Handle(PathPrefix+"/", f.h)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

type subBody struct {
	ODS, Criteria, Endpoint, Channel, Status, Extra, End string
}

func (b subBody) defaults() subBody {
	if b.ODS == "" {
		b.ODS = "RR8"
	}
	if b.Criteria == "" {
		b.Criteria = critGP
	}
	if b.Endpoint == "" {
		b.Endpoint = "MBX001"
	}
	if b.Channel == "" {
		b.Channel = "message"
	}
	if b.Status == "" {
		b.Status = "requested"
	}
	return b
}

func esc(s string) string {
	var buf bytes.Buffer
	xml.EscapeText(&buf, []byte(s))
	return buf.String()
}

func (b subBody) XML() string {
	b = b.defaults()
	end := ""
	if b.End != "" {
		end = `<end value="` + b.End + `"/>`
	}
	return `<Subscription xmlns="http://hl7.org/fhir">` + b.Extra +
		`<meta><profile value="` + ProfileURL + `"/></meta>
  <status value="` + b.Status + `"/>
  <contact><system value="url"/><value value="` + odsURLPrefix + b.ODS + `"/><use value="work"/></contact>` + end + `
  <reason value="why"/>
  <criteria value="` + esc(b.Criteria) + `"/>
  <channel><type value="` + b.Channel + `"/><endpoint value="` + esc(b.Endpoint) + `"/></channel>
</Subscription>`
}

func (b subBody) JSON() string {
	b = b.defaults()
	m := map[string]any{
		"resourceType": "Subscription",
		"meta":         map[string]any{"profile": []string{ProfileURL}},
		"status":       b.Status,
		"contact":      []any{map[string]any{"system": "url", "value": odsURLPrefix + b.ODS, "use": "work"}},
		"reason":       "why",
		"criteria":     b.Criteria,
		"channel":      map[string]any{"type": b.Channel, "endpoint": b.Endpoint},
	}
	if b.End != "" {
		m["end"] = b.End
	}
	out, _ := json.Marshal(m)
	return string(out)
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (f *apiFixture) do(t *testing.T, method, path, asid string, body string, hdr ...string) resp {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if asid != "" {
		req.Header.Set("fromASID", asid)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, data}
}

func (r resp) node(t *testing.T) *fhir.Node {
	t.Helper()
	f, ok := fhir.FormatForContentType(r.header.Get("Content-Type"))
	if !ok {
		t.Fatalf("response Content-Type %q (status %d, body %s)", r.header.Get("Content-Type"), r.status, r.body)
	}
	n, err := fhir.Parse(r.body, f, fhir.Limits{})
	if err != nil {
		t.Fatalf("response body: %v\n%s", err, r.body)
	}
	return n
}

// issue returns the first issue's Spine code, diagnostics, expression and severity.
func (r resp) issue(t *testing.T) (code, diag, expr, severity string) {
	t.Helper()
	n := r.node(t)
	if n.ResourceType != "OperationOutcome" {
		t.Fatalf("want OperationOutcome, got %s", n.ResourceType)
	}
	is := n.Child("issue")
	return is.Str("details", "coding", "code"), is.Str("diagnostics"), is.Str("expression"), is.Str("severity")
}

func (r resp) wantIssue(t *testing.T, status int, code, diagContains, expr string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	c, d, e, _ := r.issue(t)
	if c != code || !strings.Contains(d, diagContains) || e != expr {
		t.Fatalf("issue %s %q at %q, want %s containing %q at %q", c, d, e, code, diagContains, expr)
	}
}

func idFromLocation(t *testing.T, r resp) string {
	t.Helper()
	loc := r.header.Get("Location")
	_, id, ok := strings.Cut(loc, "STU3/Subscription/")
	if !ok || len(id) != 32 {
		t.Fatalf("Location %q", loc)
	}
	return id
}

func TestAPICreateReadDelete(t *testing.T) {
	f := newAPI(t, Policy{})
	cases := []struct {
		name, body string
		hdr        []string
		crit       string
	}{
		{"XML without Content-Type (NHS scripts)", subBody{}.XML(), nil, critGP},
		{"XML fhir+xml", subBody{Endpoint: "MBX002"}.XML(), []string{"Content-Type", "application/fhir+xml;charset=utf-8"}, critGP},
		{"JSON fhir+json", subBody{Criteria: critCountry}.JSON(), []string{"Content-Type", "application/fhir+json", "Accept", "application/fhir+json"}, critCountry},
		{"JSON without Content-Type", subBody{Criteria: critCountry, Endpoint: "MBX002"}.JSON(), nil, critCountry},
		{"JSON as application/json (fhirclient)", subBody{Criteria: critGP + "&tag=x"}.JSON(), []string{"Content-Type", "application/json"}, critGP + "&tag=x"},
		{"XML as application/xml+fhir", subBody{Criteria: critGP + "&tag=y"}.XML(), []string{"Content-Type", "application/xml+fhir"}, critGP + "&tag=y"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(t, "POST", PathPrefix, asidRR8, tc.body, tc.hdr...)
			if r.status != http.StatusCreated || len(r.body) != 0 {
				t.Fatalf("create: %d %s", r.status, r.body)
			}
			if r.header.Get("ETag") != `W/"1"` || r.header.Get("Last-Modified") != "Sun, 22 Nov 2026 10:00:00 GMT" {
				t.Fatalf("headers %v", r.header)
			}
			id := idFromLocation(t, r)
			for _, format := range []string{"application/fhir+xml", "application/fhir+json"} {
				g := f.do(t, "GET", PathPrefix+"/"+id, asidRR8, "", "Accept", format)
				if g.status != 200 || !strings.HasPrefix(g.header.Get("Content-Type"), format) {
					t.Fatalf("read: %d %s %s", g.status, g.header.Get("Content-Type"), g.body)
				}
				n := g.node(t)
				if n.Str("id") != id || n.Str("meta", "versionId") != "1" || n.Str("meta", "lastUpdated") != "2026-11-22T10:00:00.000Z" ||
					n.Str("status") != "active" || n.Str("criteria") != tc.crit || n.Str("contact", "value") != odsURLPrefix+"RR8" || n.Str("meta", "profile") != ProfileURL {
					t.Fatalf("read body %s", g.body)
				}
			}
		})
	}
	// Without Accept the answer is XML (the NEMS default); _format wins.
	r := f.do(t, "POST", PathPrefix, asidRR8, subBody{Criteria: critGP + "&tag=z"}.XML())
	id := idFromLocation(t, r)
	if g := f.do(t, "GET", PathPrefix+"/"+id, asidRR8, ""); !strings.HasPrefix(g.header.Get("Content-Type"), "application/fhir+xml") {
		t.Fatalf("default format %s", g.header.Get("Content-Type"))
	}
	if g := f.do(t, "GET", PathPrefix+"/"+id+"?_format=json", asidRR8, "", "Accept", "application/fhir+xml"); !strings.HasPrefix(g.header.Get("Content-Type"), "application/fhir+json") {
		t.Fatalf("_format: %s", g.header.Get("Content-Type"))
	}

	// Ownership: another organisation can neither read nor delete.
	f.do(t, "GET", PathPrefix+"/"+id, asidX26, "").wantIssue(t, 403, "ACCESS_DENIED", "another organisation", "")
	f.do(t, "DELETE", PathPrefix+"/"+id, asidX26, "").wantIssue(t, 403, "ACCESS_DENIED", "another organisation", "")
	f.do(t, "PUT", PathPrefix+"/"+id, asidX26, subBody{ODS: "X26", Endpoint: "X26MBX"}.XML()).wantIssue(t, 403, "ACCESS_DENIED", "another organisation", "")

	if d := f.do(t, "DELETE", PathPrefix+"/"+id, asidRR8, ""); d.status != 200 {
		t.Fatalf("delete: %d %s", d.status, d.body)
	}
	f.do(t, "GET", PathPrefix+"/"+id, asidRR8, "").wantIssue(t, 404, "NO_RECORD_FOUND", "", "")
	f.do(t, "DELETE", PathPrefix+"/"+id, asidRR8, "").wantIssue(t, 404, "NO_RECORD_FOUND", "", "")
	f.do(t, "GET", PathPrefix+"/nonexistent", asidRR8, "").wantIssue(t, 404, "NO_RECORD_FOUND", "", "")
	hist, _ := f.h.Service().History(id)
	if len(hist) != 2 || hist[1].Action != ActionDelete || hist[1].Actor != "asid:"+asidRR8 {
		t.Fatalf("history %+v", hist)
	}
}

func TestAPICreateErrors(t *testing.T) {
	f := newAPI(t, Policy{})
	past := "2026-11-21T10:00:00+00:00"
	cases := []struct {
		name, asid, body string
		hdr              []string
		status           int
		code, diag, expr string
	}{
		{"no fromASID", "", subBody{}.XML(), nil, 400, "MISSING_OR_INVALID_HEADER", "fromASID", ""},
		{"unknown ASID", "999", subBody{}.XML(), nil, 403, "ASID_CHECK_FAILED", "999", ""},
		{"unsupported media type", asidRR8, subBody{}.XML(), []string{"Content-Type", "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE", "text/plain", ""},
		{"not XML or JSON", asidRR8, "hello", nil, 400, "MESSAGE_NOT_WELL_FORMED", "neither", ""},
		{"broken XML", asidRR8, "<Subscription xmlns=\"http://hl7.org/fhir\"><status value=\"requested\">", nil, 400, "MESSAGE_NOT_WELL_FORMED", "not closed", "Subscription.status"},
		{"wrong resource", asidRR8, `<Patient xmlns="http://hl7.org/fhir"><active value="true"/></Patient>`, nil, 400, "MESSAGE_NOT_WELL_FORMED", "Patient", ""},
		{"bad criteria tag", asidRR8, subBody{Criteria: critGP + "&tag=a b"}.XML(), nil, 422, "INVALID_PARAMETER", "criteria component tag", "Subscription.criteria"},
		{"explicit and generic mixed", asidRR8, subBody{Criteria: critGP + "&subscriptionRuleType=GP_GP_GP"}.XML(), nil, 422, "INVALID_PARAMETER", "subscriptionRuleType", "Subscription.criteria"},
		{"bad NHS number", asidRR8, subBody{Criteria: base + "&Patient.identifier=9434765918&MessageHeader.event=pds-change-of-address-1"}.XML(), nil, 400, "INVALID_NHS_NUMBER", "Modulus 11", "Subscription.criteria"},
		{"unknown event", asidRR8, subBody{Criteria: base + "&Patient.identifier=" + nhsB + "&MessageHeader.event=pds-person-death-1"}.XML(), nil, 400, "INVALID_CODE_VALUE", "pds-person-death-1", "Subscription.criteria"},
		{"disabled event", asidRR8, subBody{Criteria: base + "&Patient.identifier=" + nhsB + "&MessageHeader.event=observations-1"}.XML(), nil, 400, "INVALID_CODE_VALUE", "not supported", "Subscription.criteria"},
		{"withdrawn event", asidRR8, subBody{Criteria: base + "&Patient.identifier=" + nhsB + "&MessageHeader.event=blood-spot-test-outcome-1"}.XML(), nil, 422, "WITHDRAWN", "withdrawn", "Subscription.criteria"},
		{"no longer supported event", asidRR8, subBody{Criteria: base + "&Patient.identifier=" + nhsB + "&MessageHeader.event=professional-contacts-1"}.XML(), nil, 422, "NO_LONGER_SUPPORTED", "no longer supported", "Subscription.criteria"},
		{"status active on create", asidRR8, subBody{Status: "active"}.XML(), nil, 422, "INVALID_RESOURCE", "requested", "Subscription.status"},
		{"client id", asidRR8, subBody{Extra: `<id value="abc"/>`}.XML(), nil, 422, "INVALID_RESOURCE", "assigns the id", "Subscription.id"},
		{"contact is another organisation", asidRR8, subBody{ODS: "X26", Endpoint: "X26MBX"}.XML(), nil, 403, "ACCESS_DENIED", "not the caller's organisation", "Subscription.contact[0].value"},
		{"mailbox of another organisation", asidRR8, subBody{Endpoint: "X26MBX"}.XML(), nil, 403, "ACCESS_DENIED", "X26MBX", "Subscription.channel.endpoint"},
		{"unregistered mailbox", asidRR8, subBody{Endpoint: "NOBODY1"}.XML(), nil, 403, "ACCESS_DENIED", "NOBODY1", "Subscription.channel.endpoint"},
		{"event not permitted for ASID", asidLimited, subBody{Channel: "rest-hook", Endpoint: "https://hooks.example.org/ems"}.XML(), nil, 403, "ACCESS_DENIED", "pds-change-of-address-1", "Subscription.criteria"},
		{"bad mailbox id", asidRR8, subBody{Endpoint: "not a mailbox"}.XML(), nil, 400, "INVALID_IDENTIFIER_VALUE", "MESH mailbox", "Subscription.channel.endpoint"},
		{"channel type email", asidRR8, subBody{Channel: "email", Endpoint: "a@b"}.XML(), nil, 400, "INVALID_CODE_VALUE", "email", "Subscription.channel.type"},
		{"http webhook", asidRR8, subBody{Channel: "rest-hook", Endpoint: "http://hooks.example.org/ems"}.XML(), nil, 400, "INVALID_IDENTIFIER_VALUE", "https", "Subscription.channel.endpoint"},
		{"end in the past", asidRR8, subBody{End: past}.XML(), nil, 400, "INVALID_VALUE", "not in the future", "Subscription.end"},
		{"end without offset", asidRR8, subBody{End: "2027-01-01T00:00:00"}.XML(), nil, 400, "INVALID_VALUE", "zone offset", "Subscription.end"},
		{"contact not ODS URL", asidRR8, strings.Replace(subBody{}.XML(), odsURLPrefix+"RR8", "https://example.org/RR8", 1), nil, 400, "INVALID_IDENTIFIER_VALUE", "ODS code", "Subscription.contact[0].value"},
		{"Subscription.error present", asidRR8, strings.Replace(subBody{}.XML(), "<channel>", `<error value="x"/><channel>`, 1), nil, 422, "INVALID_RESOURCE", "0..0", "Subscription.error"},
		{"no reason", asidRR8, strings.Replace(subBody{}.XML(), `<reason value="why"/>`, "", 1), nil, 422, "INVALID_RESOURCE", "reason", "Subscription.reason"},
		{"too large", asidRR8, subBody{Extra: "<!--" + strings.Repeat("x", 70<<10) + "-->"}.XML(), nil, 413, "INVALID_REQUEST_MESSAGE", "larger", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.do(t, "POST", PathPrefix, tc.asid, tc.body, tc.hdr...).wantIssue(t, tc.status, tc.code, tc.diag, tc.expr)
		})
	}
	// The JSON spelling of an error answer follows the request format.
	r := f.do(t, "POST", PathPrefix, asidRR8, subBody{Criteria: critGP + "&tag=a b"}.JSON(), "Content-Type", "application/fhir+json")
	if !strings.HasPrefix(r.header.Get("Content-Type"), "application/fhir+json") {
		t.Fatalf("error format %s", r.header.Get("Content-Type"))
	}
	if n, _ := f.h.Service().Store().Count(); n != 0 {
		t.Fatalf("%d subscriptions stored by failed creates", n)
	}
}

func TestAPIDuplicatesAndDeprecation(t *testing.T) {
	f := newAPI(t, Policy{})
	first := f.do(t, "POST", PathPrefix, asidRR8, subBody{Criteria: critCountry}.XML())
	id := idFromLocation(t, first)
	// Same meaning, other spelling and other format: duplicate.
	respelled := "Bundle?subscriptionRuleType=COUNTRYCODE&MessageHeader.event=pds-change-of-gp-1&Organization.identifier=E92000001&type=message"
	f.do(t, "POST", PathPrefix, asidRR8, subBody{Criteria: respelled}.JSON()).wantIssue(t, 422, "DUPLICATE_REJECTED", id, "Subscription.criteria")
	// Another mailbox of the same organisation is a different subscription.
	if r := f.do(t, "POST", PathPrefix, asidRR8, subBody{Criteria: critCountry, Endpoint: "MBX002"}.XML()); r.status != 201 {
		t.Fatalf("other mailbox: %d %s", r.status, r.body)
	}

	f409 := newAPI(t, Policy{DuplicateStatus: http.StatusConflict})
	f409.do(t, "POST", PathPrefix, asidRR8, subBody{}.XML())
	f409.do(t, "POST", PathPrefix, asidRR8, subBody{}.XML()).wantIssue(t, 409, "DUPLICATE_REJECTED", "", "Subscription.criteria")

	allow := newAPI(t, Policy{AllowDuplicates: true})
	allow.do(t, "POST", PathPrefix, asidRR8, subBody{}.XML())
	if r := allow.do(t, "POST", PathPrefix, asidRR8, subBody{}.XML()); r.status != 201 {
		t.Fatalf("allow duplicates: %d %s", r.status, r.body)
	}

	// Deprecated events: 201 with one DEPRECATED information issue per event.
	crit := base + "&Patient.identifier=" + nhsB + "&MessageHeader.event=newborn-hearing-1&MessageHeader.event=nipe-outcome-1&MessageHeader.event=vaccinations-1"
	r := f.do(t, "POST", PathPrefix, asidRR8, subBody{Criteria: crit}.XML())
	if r.status != 201 || r.header.Get("Location") == "" {
		t.Fatalf("deprecated create: %d %s", r.status, r.body)
	}
	n := r.node(t)
	issues := n.ChildrenNamed("issue")
	if len(issues) != 2 {
		t.Fatalf("%d issues: %s", len(issues), r.body)
	}
	for i, want := range []string{"Newborn Hearing (newborn-hearing-1) event type will occur on 01/01/2027", "NIPE outcome (nipe-outcome-1)"} {
		is := issues[i]
		if is.Str("severity") != "information" || is.Str("code") != "informational" || is.Str("details", "coding", "code") != "DEPRECATED" || !strings.Contains(is.Str("diagnostics"), want) {
			t.Fatalf("issue %d: %s", i, r.body)
		}
	}
}

func TestAPIUpdateIfMatch(t *testing.T) {
	f := newAPI(t, Policy{})
	id := idFromLocation(t, f.do(t, "POST", PathPrefix, asidRR8, subBody{}.XML()))
	g := f.do(t, "GET", PathPrefix+"/"+id, asidRR8, "", "Accept", "application/fhir+json")
	// Read-modify-write: the client sends back what it read, with a change.
	var doc map[string]any
	if err := json.Unmarshal(g.body, &doc); err != nil {
		t.Fatal(err)
	}
	doc["reason"] = "care continues"
	doc["criteria"] = critGP + "&tag=ward-9"
	body, _ := json.Marshal(doc)
	f.clock = f.clock.Add(time.Hour)
	u := f.do(t, "PUT", PathPrefix+"/"+id, asidRR8, string(body), "Content-Type", "application/fhir+json", "If-Match", `W/"1"`)
	if u.status != 200 || u.header.Get("ETag") != `W/"2"` {
		t.Fatalf("update: %d %v %s", u.status, u.header, u.body)
	}
	n := u.node(t)
	if n.Str("reason") != "care continues" || n.Str("meta", "versionId") != "2" || n.Str("criteria") != critGP+"&tag=ward-9" || n.Str("meta", "lastUpdated") != "2026-11-22T11:00:00.000Z" {
		t.Fatalf("updated body %s", u.body)
	}
	// Stale version → 412; the stored subscription is unchanged.
	f.do(t, "PUT", PathPrefix+"/"+id, asidRR8, string(body), "Content-Type", "application/fhir+json", "If-Match", `W/"1"`).wantIssue(t, 412, "PRECONDITION_FAILED", "version", "")
	f.do(t, "PUT", PathPrefix+"/"+id, asidRR8, string(body), "If-Match", `nonsense`).wantIssue(t, 412, "PRECONDITION_FAILED", "If-Match", "")
	// Status changes only through the lifecycle.
	doc["status"] = "off"
	off, _ := json.Marshal(doc)
	f.do(t, "PUT", PathPrefix+"/"+id, asidRR8, string(off), "If-Match", `W/"2"`).wantIssue(t, 422, "INVALID_RESOURCE", "status", "Subscription.status")
	// Id in the body must be the URL's.
	f.do(t, "PUT", PathPrefix+"/"+id, asidRR8, subBody{Status: "active", Extra: `<id value="ffffffffffffffffffffffffffffffff"/>`}.XML()).wantIssue(t, 400, "BAD_REQUEST", "differs", "Subscription.id")
	// Without If-Match the update applies (unless the policy requires it).
	if r := f.do(t, "PUT", PathPrefix+"/"+id, asidRR8, subBody{Status: "active"}.XML()); r.status != 200 {
		t.Fatalf("unconditional update: %d %s", r.status, r.body)
	}
	strict := newAPI(t, Policy{RequireIfMatch: true})
	sid := idFromLocation(t, strict.do(t, "POST", PathPrefix, asidRR8, subBody{}.XML()))
	strict.do(t, "PUT", PathPrefix+"/"+sid, asidRR8, subBody{Status: "active"}.XML()).wantIssue(t, 412, "PRECONDITION_FAILED", "If-Match", "")
	f.do(t, "PUT", PathPrefix+"/ffffffffffffffffffffffffffffffff", asidRR8, subBody{Status: "active"}.XML()).wantIssue(t, 404, "NO_RECORD_FOUND", "", "")
	hist, _ := f.h.Service().History(id)
	if len(hist) != 3 || hist[1].Action != ActionUpdate || hist[1].VersionID != 2 {
		t.Fatalf("history %+v", hist)
	}
}

func TestAPISearch(t *testing.T) {
	f := newAPI(t, Policy{})
	var ids []string
	for i := 0; i < 5; i++ {
		crit := base + "&Patient.identifier=" + validNHS(1000+i) + "&MessageHeader.event=vaccinations-1"
		ids = append(ids, idFromLocation(t, f.do(t, "POST", PathPrefix, asidRR8, subBody{Criteria: crit}.XML())))
	}
	ids = append(ids, idFromLocation(t, f.do(t, "POST", PathPrefix, asidRR8, subBody{Criteria: critCountry, Endpoint: "MBX002"}.XML())))
	f.do(t, "POST", PathPrefix, asidX26, subBody{ODS: "X26", Endpoint: "X26MBX", Criteria: critCountry}.XML())
	if _, err := f.h.Service().Suspend(ids[0], "operator:test", "paused"); err != nil {
		t.Fatal(err)
	}
	count := func(query string, asid string) (int, string, int) {
		t.Helper()
		r := f.do(t, "GET", PathPrefix+query, asid, "", "Accept", "application/fhir+json")
		if r.status != 200 {
			t.Fatalf("search %s: %d %s", query, r.status, r.body)
		}
		n := r.node(t)
		next := ""
		for _, l := range n.ChildrenNamed("link") {
			if l.Str("relation") == "next" {
				next = l.Str("url")
			}
		}
		if n.Str("type") != "searchset" {
			t.Fatalf("bundle type %s", n.Str("type"))
		}
		total := 0
		for _, e := range n.ChildrenNamed("entry") {
			if e.Child("resource").Resource().Str("contact", "value") != odsURLPrefix+"RR8" && asid == asidRR8 {
				t.Fatalf("foreign subscription in search: %s", r.body)
			}
			total++
		}
		tot := 0
		for _, c := range n.Str("total") {
			tot = tot*10 + int(c-'0')
		}
		return total, next, tot
	}
	cases := []struct {
		query string
		want  int
	}{
		{"", 6},
		{"?status=active", 5},
		{"?status=off", 1},
		{"?event=vaccinations-1", 5},
		{"?event=pds-change-of-gp-1", 1},
		{"?subscriptionRuleType=COUNTRYCODE", 1},
		{"?kind=explicit", 5},
		{"?channel.endpoint=MBX002", 1},
		{"?nhs-number=" + validNHS(1002), 1},
		{"?Patient.identifier=https://fhir.nhs.uk/Id/nhs-number|" + validNHS(1003), 1},
		{"?contact=RR8", 6},
		{"?contact=" + odsURLPrefix + "RR8", 6},
		{"?contact=X26", 0}, // never another organisation's
	}
	for _, tc := range cases {
		if got, _, total := count(tc.query, asidRR8); got != tc.want || total != tc.want {
			t.Errorf("search %q: %d entries (total %d), want %d", tc.query, got, total, tc.want)
		}
	}
	if got, _, _ := count("", asidX26); got != 1 {
		t.Errorf("X26 sees %d", got)
	}
	// Paging: 6 results, 4 per page.
	got, next, total := count("?_count=4", asidRR8)
	if got != 4 || total != 6 || next == "" {
		t.Fatalf("page 1: %d %d %q", got, total, next)
	}
	_, rest, _ := strings.Cut(next, PathPrefix)
	got2, next2, _ := count(rest, asidRR8)
	if got2 != 2 || next2 != "" {
		t.Fatalf("page 2: %d %q", got2, next2)
	}
	f.do(t, "GET", PathPrefix+"?status=paused", asidRR8, "").wantIssue(t, 422, "INVALID_PARAMETER", "status", "")
	f.do(t, "GET", PathPrefix+"?criteria=x", asidRR8, "").wantIssue(t, 422, "INVALID_PARAMETER", "criteria", "")
	f.do(t, "GET", PathPrefix+"?_count=0", asidRR8, "").wantIssue(t, 422, "INVALID_PARAMETER", "_count", "")
	f.do(t, "GET", PathPrefix+"?nhs-number=1234567890", asidRR8, "").wantIssue(t, 400, "INVALID_NHS_NUMBER", "", "")
	f.do(t, "PATCH", PathPrefix+"/"+ids[1], asidRR8, "").wantIssue(t, 405, "", "PATCH", "")
	if r := f.do(t, "DELETE", PathPrefix, asidRR8, ""); r.status != 405 || r.header.Get("Allow") != "GET, POST" {
		t.Fatalf("DELETE collection: %d %v", r.status, r.header)
	}
}

func TestAPIReviewPolicyAndLifecycle(t *testing.T) {
	f := newAPI(t, Policy{Review: map[string][]Kind{"*": {Generic}}})
	exp := idFromLocation(t, f.do(t, "POST", PathPrefix, asidRR8, subBody{}.XML()))
	gen := idFromLocation(t, f.do(t, "POST", PathPrefix, asidRR8, subBody{Criteria: critCountry}.XML()))
	svc := f.h.Service()
	status := func(id string) Status {
		s, err := svc.Store().Get(id)
		if err != nil {
			t.Fatal(err)
		}
		return s.Status
	}
	if status(exp) != StatusActive || status(gen) != StatusRequested {
		t.Fatalf("explicit %s generic %s", status(exp), status(gen))
	}
	pending, _, _ := svc.ListPending("", 10)
	if len(pending) != 1 || pending[0].ID != gen {
		t.Fatalf("pending %v", pending)
	}
	bm, err := svc.Matcher()
	if err != nil {
		t.Fatal(err)
	}
	mm, err := svc.MemoryMatcher()
	if err != nil {
		t.Fatal(err)
	}
	// m runs both matchers and insists they agree.
	m := matchBoth{t, bm, mm}
	facts := EventFacts{EventCode: "pds-change-of-gp-1", Country: []string{"E92000001"}}
	if got, _ := m.Match(facts); len(got) != 0 {
		t.Fatalf("requested subscription matched: %v", got)
	}
	if _, err := svc.Resume(gen, "op", ""); err == nil {
		t.Fatal("resume of a requested subscription")
	}
	if _, err := svc.Approve(gen, "operator:alice", "checked IG"); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Match(facts); len(got) != 1 || got[0].SubscriptionID != gen {
		t.Fatalf("approved subscription: %v", got)
	}
	if _, err := svc.Approve(gen, "operator:alice", ""); err == nil {
		t.Fatal("approved twice")
	}
	if _, err := svc.Suspend(gen, "operator:bob", "complaint"); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Match(facts); len(got) != 0 {
		t.Fatalf("suspended subscription matched")
	}
	if _, err := svc.Resume(gen, "operator:bob", ""); err != nil {
		t.Fatal(err)
	}
	g := f.do(t, "GET", PathPrefix+"/"+gen, asidRR8, "")
	if n := g.node(t); n.Str("status") != "active" || n.Str("meta", "versionId") != "4" || g.header.Get("ETag") != `W/"4"` {
		t.Fatalf("after approve/suspend/resume: %s", g.body)
	}
	hist, _ := svc.History(gen)
	if len(hist) != 4 || hist[1].Actor != "operator:alice" || hist[1].Note != "checked IG" || hist[2].To != StatusOff {
		t.Fatalf("history %+v", hist)
	}
	// An update of a generic subscription's criteria goes back to review.
	r := f.do(t, "PUT", PathPrefix+"/"+gen, asidRR8, subBody{Status: "active", Criteria: critCountry + "&tag=t"}.XML(), "If-Match", `W/"4"`)
	if r.status != 200 || r.node(t).Str("status") != "requested" {
		t.Fatalf("update under review: %d %s", r.status, r.body)
	}

	// End passes: the sweep turns it off and records why.
	end := f.clock.Add(24 * time.Hour).Format(time.RFC3339)
	ended := idFromLocation(t, f.do(t, "POST", PathPrefix, asidRR8, subBody{Criteria: critGP + "&tag=e", End: end}.XML()))
	f.clock = f.clock.Add(25 * time.Hour)
	if got, _ := m.Match(EventFacts{EventCode: "pds-change-of-address-1", NHSNumber: nhsB}); len(got) != 1 || got[0].SubscriptionID != exp {
		t.Fatalf("ended subscription still matches before the sweep: %v", got)
	}
	ids, err := svc.SweepExpired(t.Context())
	if err != nil || len(ids) != 1 || ids[0] != ended || status(ended) != StatusOff {
		t.Fatalf("sweep: %v %v", ids, err)
	}
	if _, err := svc.Resume(ended, "op", ""); err == nil {
		t.Fatal("resumed an ended subscription")
	}
	hist, _ = svc.History(ended)
	if last := hist[len(hist)-1]; last.Actor != "system:expiry" || last.To != StatusOff || !strings.Contains(last.Note, "passed") {
		t.Fatalf("expiry history %+v", last)
	}
}

func TestPolicyReview(t *testing.T) {
	cases := []struct {
		name   string
		p      Policy
		owner  string
		kind   Kind
		review bool
	}{
		{"zero policy activates everything", Policy{}, "RR8", Generic, false},
		{"review generic for all", Policy{Review: map[string][]Kind{"*": {Generic}}}, "RR8", Generic, true},
		{"review generic for all, explicit passes", Policy{Review: map[string][]Kind{"*": {Generic}}}, "RR8", Explicit, false},
		{"review one organisation", Policy{Review: map[string][]Kind{"X26": {Explicit, Generic}}}, "RR8", Explicit, false},
		{"review one organisation, hit", Policy{Review: map[string][]Kind{"X26": {Explicit, Generic}}}, "X26", Explicit, true},
		{"auto-activate list wins", Policy{Review: map[string][]Kind{"*": {Generic}}, AutoActivate: map[string][]Kind{"RR8": {Generic}}}, "RR8", Generic, false},
		{"auto-activate: unlisted owner waits", Policy{AutoActivate: map[string][]Kind{"RR8": {Generic, Explicit}}}, "X26", Explicit, true},
		{"auto-activate: unlisted kind waits", Policy{AutoActivate: map[string][]Kind{"*": {Explicit}}}, "X26", Generic, true},
		{"auto-activate empty: everything waits", Policy{AutoActivate: map[string][]Kind{}}, "X26", Explicit, true},
	}
	for _, tc := range cases {
		if got := tc.p.needsReview(tc.owner, tc.kind); got != tc.review {
			t.Errorf("%s: needsReview = %v", tc.name, got)
		}
	}
}

func TestRegistryIdentifier(t *testing.T) {
	if _, err := NewRegistryIdentifier(map[string]RegistryEntry{"1": {ODS: "RR8", Mailboxes: []string{"M1"}}, "2": {ODS: "X26", Mailboxes: []string{"M1"}}}); err == nil {
		t.Fatal("one mailbox registered to two organisations was accepted")
	}
	if _, err := NewRegistryIdentifier(map[string]RegistryEntry{"1": {ODS: "rr8"}}); err == nil {
		t.Fatal("a malformed ODS code was accepted")
	}
	r, err := NewRegistryIdentifier(map[string]RegistryEntry{"1": {ODS: "RR8", Mailboxes: []string{"M1"}}, "2": {ODS: "RR8", Mailboxes: []string{"M1", "M2"}}})
	if err != nil {
		t.Fatal(err)
	}
	if ods, ok := r.MailboxOwner("M2"); !ok || ods != "RR8" {
		t.Fatalf("M2 → %q %v", ods, ok)
	}
	if _, ok := r.MailboxOwner("M3"); ok {
		t.Fatal("unknown mailbox has an owner")
	}
	req := httptest.NewRequest("GET", "/STU3/Subscription", nil)
	req.Header.Set("fromASID", " 2 ")
	if c, o := r.Identify(req); o != nil || c.ODS != "RR8" || c.ASID != "2" {
		t.Fatalf("identify: %+v %+v", c, o)
	}
	if !(Caller{}).MaySubscribe("x") || (Caller{SubscribeEvents: []string{"a"}}).MaySubscribe("b") || !(Caller{SubscribeEvents: []string{"*"}}).MaySubscribe("b") {
		t.Fatal("MaySubscribe")
	}
}

type matchBoth struct {
	t      *testing.T
	bolt   *Matcher
	memory *Matcher
}

func (m matchBoth) Match(f EventFacts) ([]Match, error) {
	a, err := m.bolt.Match(f)
	if err != nil {
		return nil, err
	}
	b, err := m.memory.Match(f)
	if err != nil {
		return nil, err
	}
	if !reflect.DeepEqual(a, b) {
		m.t.Fatalf("bbolt matcher %+v, memory matcher %+v", a, b)
	}
	return a, nil
}

// identifyFunc adapts a function to Identifier, standing in for the token
// verification the security work will bring.
type identifyFunc func(r *http.Request) (Caller, *fhir.Outcome)

func (f identifyFunc) Identify(r *http.Request) (Caller, *fhir.Outcome) { return f(r) }

func TestAPICallerRestrictions(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	callers := map[string]Caller{
		"explicit-only": {ASID: "1", ODS: "RR8", SubscribeKinds: []Kind{Explicit}},
		"patient-bound": {ASID: "2", ODS: "RR8", RequestingPatient: nhsA},
	}
	h, err := NewHandler(Options{DB: db, Identifier: identifyFunc(func(r *http.Request) (Caller, *fhir.Outcome) {
		return callers[r.Header.Get("X-Test-Caller")], nil
	})})
	if err != nil {
		t.Fatal(err)
	}
	post := func(caller, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, PathPrefix, strings.NewReader(body))
		req.Header.Set("X-Test-Caller", caller)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	hook := func(crit string) string {
		return subBody{Channel: "rest-hook", Endpoint: "https://hooks.example.org/ems", Criteria: crit}.XML()
	}
	cases := []struct {
		caller, crit string
		status       int
		code         string
	}{
		{"explicit-only", critGP, 201, ""},
		{"explicit-only", critCountry, 403, "ACCESS_DENIED"},
		{"patient-bound", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1", 201, ""},
		{"patient-bound", critGP, 400, "REQUEST_UNMATCHED"},
		{"patient-bound", critCountry, 201, ""},
	}
	for _, tc := range cases {
		w := post(tc.caller, hook(tc.crit))
		if w.Code != tc.status || (tc.code != "" && !strings.Contains(w.Body.String(), `"`+tc.code+`"`)) {
			t.Errorf("%s %s: %d %s", tc.caller, tc.crit, w.Code, w.Body)
		}
	}
}
