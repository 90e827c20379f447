package identity

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
)

const (
	pubASID   = "200000000001" // RR8, publishes vaccinations-1
	subASID   = "200000000002" // RX1, explicit subscriptions only
	pdsASID   = "200000000003" // Spine PDS
	otherASID = "200000000009" // unregistered
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testAuth(t *testing.T, require bool, mutate ...func(*Options)) *Authenticator {
	t.Helper()
	reg, err := NewRegistry([]System{
		{ASID: pubASID, ODS: "RR8", PublishEvents: []string{"vaccinations-1", "*"}, Mailboxes: []string{"RR8OT001"}},
		{ASID: subASID, ODS: "RX1", SubscriptionKinds: []string{KindExplicit}, Mailboxes: []string{"RX1OT001"}},
		{ASID: pdsASID, ODS: "X26", PublishEvents: []string{"pds-change-of-address-1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Registry: reg, Verifier: testVerifier(t, false), RequireIdentity: require, ServiceASIDs: []string{"200000000306"}, Logger: quietLog()}
	for _, m := range mutate {
		m(&opts)
	}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// nemsClaims are the claims of a well-behaved caller.
func nemsClaims(asid, ods, scope string) map[string]any {
	return map[string]any{
		"iss": "https://caller.example", "sub": asid, "aud": "https://ems.example",
		"exp": testNow.Add(5 * time.Minute).Unix(), "iat": testNow.Unix(),
		"reason_for_request": "directcare", "scope": scope,
		"requesting_system": asid, "requesting_organisation": ods,
	}
}

func request(method string, headers map[string]string) *http.Request {
	r := httptest.NewRequest(method, "/STU3/Subscription", nil)
	for k, v := range headers {
		r.Header.Set(k, v)
	}
	return r
}

func TestAuthenticate(t *testing.T) {
	a := testAuth(t, true)
	read := subscriptionOperation(http.MethodGet)
	post := subscriptionOperation(http.MethodPost)
	rs := func(c map[string]any) string { return "Bearer " + mustSign(t, AlgRS256, rsaKey, c, nil) }
	with := func(c map[string]any, k string, v any) map[string]any {
		out := map[string]any{}
		for kk, vv := range c {
			out[kk] = vv
		}
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
		return out
	}
	good := nemsClaims(subASID, "RX1", SubscriptionWriteScope)
	headers := func(auth string, kv ...string) map[string]string {
		h := map[string]string{"fromASID": subASID, "toASID": "200000000306", "InteractionID": SubscriptionPostAction, "Authorization": auth}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(h, kv[i])
			} else {
				h[kv[i]] = kv[i+1]
			}
		}
		return h
	}
	// The form NHS subscriber scripts send (clients.md): system|value
	// identifiers, US spelling, no Bearer prefix.
	script := with(with(with(good, "sub", ASIDSystem+"|"+subASID), "requesting_system", ASIDSystem+"|"+subASID), "requesting_organisation", nil)
	script["requesting_organization"] = ODSSystem + "|RX1"

	tests := []struct {
		name    string
		op      Operation
		headers map[string]string
		want    fhir.SpineCode // "" accepted
	}{
		{"spec form", post, headers(rs(good)), ""},
		{"script form without Bearer", post, headers(strings.TrimPrefix(rs(script), "Bearer ")), ""},
		{"lower-case bearer", post, headers("bearer " + strings.TrimPrefix(rs(good), "Bearer ")), ""},
		{"requesting_user as sub", post, headers(rs(with(with(good, "requesting_user", "https://fhir.nhs.uk/Id/sds-role-profile-id|555"), "sub", "https://fhir.nhs.uk/Id/sds-role-profile-id|555"))), ""},
		{"read with write scope and Post interaction (fhirclient)", read, headers(rs(good)), ""},
		{"both spellings agreeing", post, headers(rs(with(good, "requesting_organization", ODSSystem+"|RX1"))), ""},

		{"no fromASID", post, headers(rs(good), "fromASID", ""), fhir.MissingOrInvalidHeader},
		{"fromASID not digits", post, headers(rs(good), "fromASID", "20000000000x"), fhir.MissingOrInvalidHeader},
		{"unknown fromASID", post, headers(rs(good), "fromASID", otherASID), fhir.ASIDCheckFailed},
		{"no toASID", post, headers(rs(good), "toASID", ""), fhir.MissingOrInvalidHeader},
		{"toASID not this service", post, headers(rs(good), "toASID", "200000000999"), fhir.ASIDCheckFailed},
		{"no InteractionID", post, headers(rs(good), "InteractionID", ""), fhir.MissingOrInvalidHeader},
		{"InteractionID of another method", post, headers(rs(good), "InteractionID", SubscriptionDelete), fhir.MissingOrInvalidHeader},
		{"no Authorization", post, headers("", "Authorization", ""), fhir.MissingOrInvalidHeader},
		{"garbage token", post, headers("Bearer abc"), fhir.MissingOrInvalidHeader},
		{"unsigned token", post, headers("Bearer " + mustSign(t, AlgNone, nil, good, nil)), fhir.MissingOrInvalidHeader},
		{"wrong scope", post, headers(rs(with(good, "scope", SubscriptionReadScope))), fhir.MissingOrInvalidHeader},
		{"publish scope", post, headers(rs(with(good, "scope", PublishScope))), fhir.MissingOrInvalidHeader},
		{"no scope", post, headers(rs(with(good, "scope", nil))), fhir.MissingOrInvalidHeader},
		{"no requesting_system", post, headers(rs(with(good, "requesting_system", nil))), fhir.MissingOrInvalidHeader},
		{"requesting_system another ASID", post, headers(rs(with(with(good, "requesting_system", pubASID), "sub", pubASID))), fhir.RequestUnmatched},
		{"requesting_system ODS system", post, headers(rs(with(good, "requesting_system", ODSSystem+"|"+subASID))), fhir.MissingOrInvalidHeader},
		{"requesting_system a number", post, headers(rs(with(good, "requesting_system", 200000000002))), fhir.MissingOrInvalidHeader},
		{"no organisation", post, headers(rs(with(good, "requesting_organisation", nil))), fhir.MissingOrInvalidHeader},
		{"organisation of another ASID", post, headers(rs(with(good, "requesting_organisation", "RR8"))), fhir.RequestUnmatched},
		{"spellings disagree", post, headers(rs(with(good, "requesting_organization", "RR8"))), fhir.MissingOrInvalidHeader},
		{"sub not requesting_system", post, headers(rs(with(good, "sub", pubASID))), fhir.MissingOrInvalidHeader},
		{"sub not requesting_user", post, headers(rs(with(good, "requesting_user", "u1"))), fhir.MissingOrInvalidHeader},
		{"requesting_patient invalid", post, headers(rs(with(good, "requesting_patient", "1234567890"))), fhir.MissingOrInvalidHeader},
		{"requesting_patient valid", post, headers(rs(with(good, "requesting_patient", fhir.NHSNumberSystem+"|9434765919"))), ""},
		{"expired token", post, headers(rs(with(good, "exp", testNow.Add(-time.Hour).Unix()))), fhir.MissingOrInvalidHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, issue := a.Authenticate(request(http.MethodPost, tt.headers), tt.op)
			switch {
			case tt.want == "" && issue != nil:
				t.Fatalf("refused: %s %s", issue.Code, issue.Diagnostics)
			case tt.want != "" && issue == nil:
				t.Fatalf("accepted as %+v, want %s", c.System, tt.want)
			case tt.want != "" && issue.Code != tt.want:
				t.Fatalf("got %s (%s), want %s", issue.Code, issue.Diagnostics, tt.want)
			case tt.want == "" && (c.System.ASID != subASID || c.System.ODS != "RX1"):
				t.Fatalf("caller %+v", c.System)
			}
			if issue != nil && strings.Contains(issue.Diagnostics, "eyJ") {
				t.Errorf("diagnostics echo the token: %s", issue.Diagnostics)
			}
		})
	}
}

func TestAuthenticateOptionalIdentity(t *testing.T) {
	a := testAuth(t, false)
	op := subscriptionOperation(http.MethodGet)
	if c, issue := a.Authenticate(request(http.MethodGet, map[string]string{"fromASID": subASID}), op); issue != nil || c.System.ODS != "RX1" || c.Token != nil {
		t.Fatalf("fromASID alone: %+v %v", c, issue)
	}
	// A token that is sent is checked even when none is required.
	bad := "Bearer " + mustSign(t, AlgRS256, rsaKey2, nemsClaims(subASID, "RX1", SubscriptionReadScope), nil)
	if _, issue := a.Authenticate(request(http.MethodGet, map[string]string{"fromASID": subASID, "Authorization": bad}), op); issue == nil || issue.Code != fhir.MissingOrInvalidHeader {
		t.Fatalf("forged token not refused: %v", issue)
	}
	if _, issue := a.Authenticate(request(http.MethodGet, map[string]string{"fromASID": subASID, "InteractionID": PublishInteraction(catalog.Event{PublishCode: "Vaccinations"})}), op); issue == nil {
		t.Fatal("wrong InteractionID accepted")
	}
}

func TestPublishAuthorizer(t *testing.T) {
	a := testAuth(t, true)
	p := PublishAuthorizer{Auth: a}
	vacc := catalog.Event{Code: "vaccinations-1", PublishCode: "Vaccinations", Publishable: true}
	pds := catalog.Event{Code: "pds-change-of-address-1"}
	hdr := func(asid, ods string, ev catalog.Event) map[string]string {
		return map[string]string{"fromASID": asid, "toASID": "200000000306", "InteractionID": PublishInteraction(ev),
			"Authorization": "Bearer " + mustSign(t, AlgES256, ecKey, nemsClaims(asid, ods, PublishScope), map[string]any{"kid": "ec"})}
	}
	for _, tt := range []struct {
		name    string
		headers map[string]string
		ev      catalog.Event
		want    fhir.SpineCode
	}{
		{"granted", hdr(pubASID, "RR8", vacc), vacc, ""},
		{"not granted", hdr(subASID, "RX1", vacc), vacc, fhir.AccessDenied},
		{"PDS event by a wildcard publisher", hdr(pubASID, "RR8", pds), pds, fhir.AccessDenied},
		{"PDS event by the PDS identity", hdr(pdsASID, "X26", pds), pds, ""},
		{"impersonating another ASID's organisation", func() map[string]string {
			h := hdr(pubASID, "RR8", vacc)
			h["fromASID"] = pdsASID
			return h
		}(), vacc, fhir.RequestUnmatched},
		{"subscription scope", func() map[string]string {
			h := hdr(pubASID, "RR8", vacc)
			h["Authorization"] = "Bearer " + mustSign(t, AlgES256, ecKey, nemsClaims(pubASID, "RR8", SubscriptionWriteScope), nil)
			return h
		}(), vacc, fhir.MissingOrInvalidHeader},
		{"InteractionID of another event", func() map[string]string {
			h := hdr(pubASID, "RR8", vacc)
			h["InteractionID"] = "urn:nhs:names:services:events:Bloodspottestoutcome.Write"
			return h
		}(), vacc, fhir.MissingOrInvalidHeader},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/STU3/Events/1/$process-message", nil)
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			c, issue := p.AuthorizePublish(r, tt.ev)
			if got := codeOf(issue); got != tt.want {
				t.Fatalf("got %q (%v), want %q", got, issue, tt.want)
			}
			if tt.want == "" && c.ASID != tt.headers["fromASID"] {
				t.Fatalf("caller %+v", c)
			}
		})
	}
	// An empty registry with nothing required is the open development
	// setup; with identity required it is closed.
	open := &Authenticator{opts: Options{Registry: &Registry{}, Logger: quietLog()}}
	if _, issue := (PublishAuthorizer{Auth: open}).AuthorizePublish(httptest.NewRequest(http.MethodPost, "/", nil), vacc); issue != nil {
		t.Fatalf("open setup refused: %v", issue)
	}
}

func codeOf(i *fhir.Issue) fhir.SpineCode {
	if i == nil {
		return ""
	}
	return i.Code
}

func TestSubscriptionIdentifierKinds(t *testing.T) {
	s := SubscriptionIdentifier{Auth: testAuth(t, false)}
	explicit := `{"resourceType":"Subscription","criteria":"/Bundle?type=message&serviceType=UHV&Patient.identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919&MessageHeader.event=pds-change-of-address-1"}`
	generic := `{"resourceType":"Subscription","criteria":"/Bundle?type=message&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=COUNTRYCODE&Organization.identifier=E92000001"}`
	for _, tt := range []struct {
		asid, body string
		want       fhir.SpineCode
	}{
		{subASID, explicit, ""},
		{subASID, generic, fhir.AccessDenied},
		{pubASID, generic, ""},                          // no kinds listed: both
		{subASID, `{"resourceType":"Subscription"`, ""}, // unparseable: the handler's to refuse
	} {
		r := httptest.NewRequest(http.MethodPost, "/STU3/Subscription", strings.NewReader(tt.body))
		r.Header.Set("fromASID", tt.asid)
		_, o := s.Identify(r)
		var got fhir.SpineCode
		if o != nil {
			got = o.Issues[0].Code
		}
		if got != tt.want {
			t.Errorf("%s %.60s: got %q, want %q", tt.asid, tt.body, got, tt.want)
		}
		// The handler must still see the whole body.
		if rest, _ := io.ReadAll(r.Body); tt.want == "" && string(rest) != tt.body {
			t.Errorf("body not restored: %q", rest)
		}
	}
	// requesting_patient must be the patient of an explicit subscription.
	tok := nemsClaims(pubASID, "RR8", SubscriptionWriteScope)
	tok["requesting_patient"] = "9999999468"
	r := httptest.NewRequest(http.MethodPost, "/STU3/Subscription", strings.NewReader(explicit))
	r.Header.Set("fromASID", pubASID)
	r.Header.Set("Authorization", "Bearer "+mustSign(t, AlgRS256, rsaKey, tok, nil))
	if _, o := s.Identify(r); o == nil || o.Issues[0].Code != fhir.RequestUnmatched {
		t.Errorf("requesting_patient mismatch: %+v", o)
	}
	if ods, ok := s.MailboxOwner("RX1OT001"); !ok || ods != "RX1" {
		t.Errorf("MailboxOwner = %q %v", ods, ok)
	}
}

func TestCertificateASID(t *testing.T) {
	leaf := &x509.Certificate{Subject: pkix.Name{CommonName: "publisher.rr8.example"}, URIs: []*url.URL{{Scheme: "urn", Opaque: "nhs:asid:" + pubASID}}}
	stranger := &x509.Certificate{Subject: pkix.Name{CommonName: "stranger"}}
	a := testAuth(t, false, func(o *Options) {
		o.CertASIDs = map[string]string{"urn:nhs:asid:" + pubASID: pubASID}
		o.RequireClientCert = true
	})
	withCert := func(c *x509.Certificate, from string) *http.Request {
		r := request(http.MethodGet, map[string]string{"fromASID": from})
		if c != nil {
			r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}
		}
		return r
	}
	op := subscriptionOperation(http.MethodGet)
	for _, tt := range []struct {
		name string
		r    *http.Request
		want fhir.SpineCode
	}{
		{"agreeing", withCert(leaf, pubASID), ""},
		{"certificate alone", withCert(leaf, ""), ""},
		{"disagreeing", withCert(leaf, subASID), fhir.ASIDCheckFailed},
		{"unmapped certificate", withCert(stranger, pubASID), fhir.ASIDCheckFailed},
		{"no certificate", withCert(nil, pubASID), fhir.AccessDenied},
	} {
		if _, issue := a.Authenticate(tt.r, op); codeOf(issue) != tt.want {
			t.Errorf("%s: got %v, want %q", tt.name, issue, tt.want)
		}
	}
}

func TestRegistryRefusesAmbiguity(t *testing.T) {
	for name, systems := range map[string][]System{
		"shared mailbox": {{ASID: "1", ODS: "AAA", Mailboxes: []string{"MB"}}, {ASID: "2", ODS: "BBB", Mailboxes: []string{"MB"}}},
		"duplicate ASID": {{ASID: "1", ODS: "AAA"}, {ASID: "1", ODS: "AAA"}},
		"bad ASID":       {{ASID: "x1", ODS: "AAA"}},
		"bad ODS":        {{ASID: "1", ODS: "a"}},
		"bad kind":       {{ASID: "1", ODS: "AAA", SubscriptionKinds: []string{"all"}}},
	} {
		if _, err := NewRegistry(systems); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPublishGate(t *testing.T) {
	a := testAuth(t, true)
	reached := 0
	gate := PublishAuthorizer{Auth: a}.Gate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached++
		w.WriteHeader(http.StatusAccepted)
	}))
	post := func(h map[string]string) int {
		r := httptest.NewRequest(http.MethodPost, "/STU3/Events/1/$process-message", strings.NewReader("<Bundle/>"))
		for k, v := range h {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		gate.ServeHTTP(w, r)
		return w.Code
	}
	if code := post(map[string]string{"fromASID": pubASID}); code != http.StatusBadRequest || reached != 0 {
		t.Fatalf("no JWT: %d, handler reached %d times", code, reached)
	}
	good := map[string]string{"fromASID": pubASID, "toASID": "200000000306", "InteractionID": "urn:nhs:names:services:events:Vaccinations.Write",
		"Authorization": "Bearer " + mustSign(t, AlgRS256, rsaKey, nemsClaims(pubASID, "RR8", PublishScope), nil)}
	if code := post(good); code != http.StatusAccepted || reached != 1 {
		t.Fatalf("authenticated: %d, reached %d", code, reached)
	}
}
