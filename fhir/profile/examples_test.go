package profile

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ems-broker/ems/fhir"
)

func validator(t testing.TB) *Validator {
	t.Helper()
	v, err := New(Options{MaxIssues: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func readBundle(t testing.TB, path string) *fhir.Node {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := fhir.ParseXML(data, fhir.DefaultLimits())
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

func exampleFiles(t testing.TB) []string {
	files, err := filepath.Glob("testdata/examples/*.xml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	sort.Strings(files)
	return files
}

// defective lists the examples INDEX.md documents as invalid, with the
// diagnostic fragment each must fail with.
var defective = map[string]string{
	"nipe-outcome-1-update.xml": "zone offset +58:00 is out of range",
}

func TestExamples(t *testing.T) {
	v := validator(t)
	for _, f := range exampleFiles(t) {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			issues := v.ValidateBundle(readBundle(t, f), BundleOptions{})
			var errs []string
			for _, is := range issues {
				if is.IsError() {
					errs = append(errs, is.Expression+" | "+is.Diagnostics)
				}
			}
			want, bad := defective[name]
			if !bad {
				if len(errs) > 0 {
					t.Errorf("%d errors:\n%s", len(errs), strings.Join(errs, "\n"))
				}
				return
			}
			if len(errs) != 1 || !strings.Contains(errs[0], want) {
				t.Errorf("want exactly one error containing %q, got:\n%s", want, strings.Join(errs, "\n"))
			}
		})
	}
}
