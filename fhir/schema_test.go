package fhir

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSchemaUpToDate regenerates the embedded table from the STU3 core
// definitions when they are available (the project's shared folder beside
// the repository) and checks that the committed file matches.
func TestSchemaUpToDate(t *testing.T) {
	in := filepath.Join("..", "..", "shared", "conformance", "stu3-core")
	if _, err := os.Stat(filepath.Join(in, "Bundle-types.json")); err != nil {
		t.Skip("STU3 core definitions not present:", err)
	}
	if testing.Short() {
		t.Skip("builds and runs the generator")
	}
	out := filepath.Join(t.TempDir(), "stu3.schema")
	cmd := exec.Command("go", "run", "./internal/schemagen", "-in", in, "-out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("schemagen: %v\n%s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != stu3Schema {
		t.Fatal("definitions/stu3.schema is stale: run go generate in fhir/")
	}
}

func TestSchemaLoadTime(t *testing.T) {
	start := time.Now()
	s, err := parseSchema(stu3Schema)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("schema: %d bytes embedded, %d resource types, parsed in %v", len(stu3Schema), len(s.resources), took)
	if len(s.resources) != 117 {
		t.Errorf("%d concrete resource types, want 117 (119 STU3 resource definitions less the abstract Resource and DomainResource)", len(s.resources))
	}
	if took > 250*time.Millisecond {
		t.Errorf("schema took %v to load; start-up must stay well under a second", took)
	}
}

func TestLookupElement(t *testing.T) {
	tests := []struct {
		typ, path string
		repeats   bool
		typeName  string
		order     int
		attr      bool
	}{
		{"Bundle", "entry", true, "Bundle.entry", 8, false},
		{"Bundle", "entry.resource", false, "Resource", 5, false},
		{"Bundle", "entry.link", true, "Bundle.link", 3, false}, // contentReference #Bundle.link
		{"Bundle", "entry.link.relation", false, "string", 3, false},
		{"Bundle", "total", false, "unsignedInt", 6, false},
		{"Patient", "name.given", true, "string", 5, false},
		{"Patient", "identifier.value", false, "string", 5, false},
		{"Patient", "contained", true, "Resource", 5, false},
		{"Patient", "extension.url", false, "uri", 2, true},
		{"Patient", "name.id", false, "string", 0, true},
		{"Patient", "id", false, "id", 0, false}, // Resource.id is an element, not an attribute
		{"Observation", "valueQuantity.value", false, "decimal", 2, false},
		{"Observation", "valueQuantity", false, "Quantity", 18, false},
		{"Extension", "valueHumanName.given", true, "string", 5, false},
		{"Extension", "valueAge.value", false, "decimal", 2, false},
		{"Questionnaire", "item.item.item.linkId", false, "string", 3, false}, // recursive contentReference
		{"Timing", "repeat.boundsPeriod.start", false, "dateTime", 2, false},  // Element-typed backbone in a datatype
		{"MessageHeader", "source.name", false, "string", 3, false},
		{"Meta", "profile", true, "uri", 4, false},
	}
	for _, tt := range tests {
		c, ok := LookupElement(tt.typ, tt.path)
		if !ok {
			t.Errorf("%s.%s not found", tt.typ, tt.path)
			continue
		}
		if c.Element.Repeats() != tt.repeats || c.Type.Name != tt.typeName || c.Element.Order != tt.order || c.Element.Attr != tt.attr {
			t.Errorf("%s.%s: repeats %v type %s order %d attr %v; want %v %s %d %v", tt.typ, tt.path,
				c.Element.Repeats(), c.Type.Name, c.Element.Order, c.Element.Attr, tt.repeats, tt.typeName, tt.order, tt.attr)
		}
	}
	for _, bad := range []string{"Patient.colour", "Patient.name.colour", "Patient.value", "Nope.id", "Observation.valueFoo", "Patient.gender.value"} {
		typ, path, _ := strings.Cut(bad, ".")
		if _, ok := LookupElement(typ, path); ok {
			t.Errorf("%s resolved", bad)
		}
	}
	if c, _ := LookupElement("Extension", "valueAge"); c.TypeCode != "Age" || c.Type.Name != "Age" {
		t.Errorf("valueAge: TypeCode %q type %s", c.TypeCode, c.Type.Name)
	}
	if LookupType("SimpleQuantity") != LookupType("Quantity") {
		t.Error("SimpleQuantity must share Quantity's structure")
	}
	if !IsResourceType("Patient") || IsResourceType("DomainResource") || IsResourceType("HumanName") || IsResourceType("Bundle.entry") {
		t.Error("IsResourceType")
	}
	if LookupType("decimal").JSON != JSONNumber || LookupType("positiveInt").JSON != JSONNumber ||
		LookupType("boolean").JSON != JSONBoolean || LookupType("dateTime").JSON != JSONString {
		t.Error("primitive JSON kinds")
	}
}

func TestWalkLocations(t *testing.T) {
	n, err := ParseXML(readFile(t, "testdata/examples/nems/PDS-Change-Of-GP-ems-example.xml"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var locs []string
	Walk(n, func(k *Node, loc Path, el *Element, typ *Type) bool {
		if k.Name == "value" && typ.Name == "string" {
			locs = append(locs, loc.String()+"="+k.Value)
		}
		return true
	})
	want := "Bundle.entry[0].resource.extension[0].extension[0].valueIdentifier.value=9912003888"
	if len(locs) == 0 || locs[0] != want {
		t.Fatalf("first identifier value location %v, want %s", locs, want)
	}
}

func TestWalkSplitRuns(t *testing.T) {
	n, err := ParseXML([]byte(`<Patient xmlns="http://hl7.org/fhir"><name><family value="A"/></name><gender value="male"/><name><family value="B"/></name><name><family value="C"/></name><telecom><value value="1"/></telecom></Patient>`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var locs []string
	Walk(n, func(k *Node, loc Path, el *Element, typ *Type) bool {
		if k.Name == "family" || k.Name == "gender" || k.Name == "telecom" {
			locs = append(locs, loc.String())
		}
		return true
	})
	want := "Patient.name[0].family Patient.gender Patient.name[1].family Patient.name[2].family Patient.telecom[0]"
	if got := strings.Join(locs, " "); got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	// gender belongs after telecom: everything written after it that the
	// definition places before it is reported, each naming gender.
	var got []string
	for _, is := range CheckElementOrder(n) {
		if !strings.Contains(is.Diagnostics, "must come before gender") {
			t.Errorf("diagnostic %q", is.Diagnostics)
		}
		got = append(got, is.Expression)
	}
	if strings.Join(got, " ") != "Patient.name[1] Patient.name[2] Patient.telecom[0]" {
		t.Fatalf("order issues %v", got)
	}
}

// TestChildSlots checks the slot table behind Type.Child against the map it
// is built from, for every wire name of every type and for near misses.
func TestChildSlots(t *testing.T) {
	for _, typ := range STU3().types {
		for name := range typ.children {
			misses := []string{name[:len(name)-1], name + "x", name[:len(name)-1] + "_", "_" + name[1:], strings.ToUpper(name)}
			for _, probe := range append(misses, name) {
				want, wantOK := typ.children[probe]
				got, ok := typ.Child(probe)
				gotB, okB := typ.childBytes([]byte(probe))
				if ok != wantOK || got != want || okB != wantOK || gotB != want {
					t.Fatalf("%s.Child(%q) = %v %v, bytes %v %v; want %v %v", typ.Name, probe, got, ok, gotB, okB, want, wantOK)
				}
			}
		}
		if _, ok := typ.Child(""); ok {
			t.Fatalf("%s.Child(\"\") found", typ.Name)
		}
	}
}

// TestSortElementsNested sorts a tree whose root and a child are both out of
// order: the walk must descend into the moved children by their own types.
func TestSortElementsNested(t *testing.T) {
	n, err := ParseXML([]byte(`<Patient xmlns="http://hl7.org/fhir"><gender value="male"/><active value="true"/><name><given value="A"/><family value="B"/></name></Patient>`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(CheckElementOrder(n)) == 0 {
		t.Fatal("no order issues before sorting")
	}
	SortElements(n)
	if is := CheckElementOrder(n); len(is) != 0 {
		t.Fatalf("order issues after sorting: %v", is)
	}
	var names []string
	Walk(n, func(k *Node, loc Path, _ *Element, _ *Type) bool {
		names = append(names, loc.String())
		return true
	})
	want := "Patient Patient.active Patient.name[0] Patient.name[0].family Patient.name[0].given[0] Patient.gender"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
