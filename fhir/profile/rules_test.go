package profile

import (
	"bytes"
	"os"
	"reflect"
	"testing"

	"github.com/ems-broker/ems/fhir/profile/internal/build"
	"github.com/ems-broker/ems/fhir/profile/internal/rules"
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
	data, err := rules.Encode(fresh)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, embedded) {
		t.Fatal("embedded rules.gob.gz differs from the compiled definitions; run go generate ./fhir/profile")
	}
	// The encoding is lossless.
	back, err := rules.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, fresh) {
		t.Fatal("rules do not survive Encode/Decode")
	}
}

// TestRulesEncodingStable: decoding the embedded rules and encoding them
// again gives the same bytes (no map order leaks into the file).
func TestRulesEncodingStable(t *testing.T) {
	s, err := decodeEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	data, err := rules.Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, embedded) {
		t.Fatal("re-encoding the embedded rules changes them")
	}
}
