package subscription

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestGoldenResponses pins the wire form of a read (XML and JSON), a
// DEPRECATED create warning and a criteria error, so that a change in
// element order or outcome shape shows up in review.
func TestGoldenResponses(t *testing.T) {
	f := newAPI(t, Policy{})
	create := f.do(t, "POST", PathPrefix, asidRR8, subBody{Criteria: critGP + "&tag=ward-7", End: "2027-03-01T00:00:00+00:00"}.XML())
	id := idFromLocation(t, create)
	// The id is random: it is replaced by {id} before comparing.
	responses := map[string]resp{
		"read.xml":              f.do(t, "GET", PathPrefix+"/"+id, asidRR8, ""),
		"read.json":             f.do(t, "GET", PathPrefix+"/"+id, asidRR8, "", "Accept", "application/fhir+json"),
		"create-deprecated.xml": f.do(t, "POST", PathPrefix, asidRR8, subBody{Criteria: base + "&Patient.identifier=" + nhsB + "&MessageHeader.event=newborn-hearing-1"}.XML()),
		"criteria-error.json":   f.do(t, "POST", PathPrefix, asidRR8, subBody{Criteria: critGP + "&tag=" + "a%20b"}.JSON(), "Content-Type", "application/fhir+json"),
	}
	for name, r := range responses {
		got := []byte(strings.ReplaceAll(string(r.body), id, "{id}"))
		path := filepath.Join("testdata", name)
		if *update {
			if err := os.MkdirAll("testdata", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update to create)", err)
		}
		if string(got) != string(want) {
			t.Errorf("%s differs from the golden file:\ngot  %s\nwant %s", name, got, want)
		}
	}
}
