package subscription

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ems-broker/ems/fhir"
	bolt "go.etcd.io/bbolt"
)

// FuzzCreate posts arbitrary bodies to the API: it must never panic, and
// every answer is a 201 or an OperationOutcome whose status matches its
// first error's Spine code.
func FuzzCreate(f *testing.F) {
	for _, s := range []string{
		subBody{}.XML(), subBody{Criteria: critCountry}.JSON(), subBody{Channel: "rest-hook", Endpoint: "https://h.example/x"}.JSON(),
		subBody{End: "2030-01-01T00:00:00Z", Criteria: critGP + "&tag=a|b"}.XML(), `{"resourceType":"Subscription"}`, "<Subscription/>",
	} {
		f.Add(s, "")
		f.Add(s, "application/fhir+json")
	}
	db, err := bolt.Open(filepath.Join(f.TempDir(), "fuzz.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	reg, _ := NewRegistryIdentifier(map[string]RegistryEntry{asidRR8: {ODS: "RR8", Mailboxes: []string{"MBX001"}}})
	h, err := NewHandler(Options{DB: db, Identifier: reg, Policy: Policy{AllowDuplicates: true},
		Now: func() time.Time { return time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body, contentType string) {
		req := httptest.NewRequest(http.MethodPost, PathPrefix, strings.NewReader(body))
		req.Header.Set("fromASID", asidRR8)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code == http.StatusCreated {
			if !strings.Contains(w.Header().Get("Location"), PathPrefix+"/") {
				t.Fatalf("201 without Location")
			}
			return
		}
		format, ok := fhir.FormatForContentType(w.Header().Get("Content-Type"))
		if !ok {
			t.Fatalf("%d with Content-Type %q", w.Code, w.Header().Get("Content-Type"))
		}
		n, err := fhir.Parse(w.Body.Bytes(), format, fhir.Limits{})
		if err != nil || n.ResourceType != "OperationOutcome" {
			t.Fatalf("%d answer is not an OperationOutcome: %v %s", w.Code, err, w.Body)
		}
		code := fhir.SpineCode(n.Str("issue", "details", "coding", "code"))
		if code != "" && code.HTTPStatus() != w.Code && !(code == fhir.InvalidRequestMessage && w.Code == http.StatusRequestEntityTooLarge) {
			t.Fatalf("status %d but first issue %s (%d)", w.Code, code, code.HTTPStatus())
		}
	})
}
