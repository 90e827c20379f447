package profile

import (
	"os"
	"reflect"
	"testing"

	"github.com/ems-broker/ems/fhir/profile/internal/build"
)

// conformanceDir is where go generate reads the definitions from; it is
// outside the repository (see SOURCES.md), so the test skips without it.
const conformanceDir = "../../../shared/conformance"

// TestEmbeddedRulesCurrent recompiles the definitions and compares the
// result with the embedded rules, so a change to the compiler or the
// sources cannot ship with stale rules.
func TestEmbeddedRulesCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles 48 MB of definitions")
	}
	if _, err := os.Stat(conformanceDir); err != nil {
		t.Skipf("no conformance sources at %s", conformanceDir)
	}
	fresh, err := build.Compile(conformanceDir)
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := decodeEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	if len(fresh.Profiles) != len(embedded.Profiles) || len(fresh.ValueSets) != len(embedded.ValueSets) {
		t.Fatalf("embedded rules are stale: %d/%d profiles, %d/%d value sets; run go generate",
			len(embedded.Profiles), len(fresh.Profiles), len(embedded.ValueSets), len(fresh.ValueSets))
	}
	for url, p := range fresh.Profiles {
		if !reflect.DeepEqual(p, embedded.Profiles[url]) {
			t.Errorf("embedded rules for %s are stale; run go generate", url)
		}
	}
	for url, vs := range fresh.ValueSets {
		if !reflect.DeepEqual(vs, embedded.ValueSets[url]) {
			t.Errorf("embedded value set %s is stale; run go generate", url)
		}
	}
}
