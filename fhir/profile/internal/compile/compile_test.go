package compile

import (
	"strings"
	"testing"

	"github.com/ems-broker/ems/fhir/profile/internal/load"
)

func TestNormID(t *testing.T) {
	for in, want := range map[string]string{
		"Patient.identifier:nhsNumber.system":                                         "Patient.identifier:nhsNumber.system",
		"Extension.valueCodeableConcept:valueCodeableConcept":                         "Extension.valueCodeableConcept",
		"Extension.extension:status.value[x]:valueCodeableConcept.coding":             "Extension.extension:status.valueCodeableConcept.coding",
		"Extension.extension:status.valueCodeableConcept:valueCodeableConcept.coding": "Extension.extension:status.valueCodeableConcept.coding",
		"Observation.value[x]:valueQuantity.unit":                                     "Observation.valueQuantity.unit",
		"Task.input:responseLevel.value[x]:valueCodeableConcept":                      "Task.input:responseLevel.valueCodeableConcept",
	} {
		if got := normID(in); got != want {
			t.Errorf("normID(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestRenamedChoice: Forge's renamed choice becomes the choice element
// restricted to its one type, and children with truncated ids are placed
// under it.
func TestRenamedChoice(t *testing.T) {
	sd := `<StructureDefinition xmlns="http://hl7.org/fhir">
  <url value="http://example.org/x"/><name value="X"/><kind value="complex-type"/><type value="Extension"/>
  <contextType value="resource"/><context value="Patient"/>
  <snapshot>
    <element id="Extension"><path value="Extension"/><min value="0"/><max value="*"/></element>
    <element id="Extension.url"><path value="Extension.url"/><min value="1"/><max value="1"/><type><code value="uri"/></type><fixedUri value="http://example.org/x"/></element>
    <element id="Extension.value[x]:valueCodeableConcept"><path value="Extension.valueCodeableConcept"/><sliceName value="valueCodeableConcept"/>
      <min value="1"/><max value="1"/><base><path value="Extension.value[x]"/><min value="0"/><max value="1"/></base><type><code value="CodeableConcept"/></type></element>
    <element id="valueCodeableConcept:valueCodeableConcept.coding"><path value="Extension.valueCodeableConcept.coding"/><min value="1"/><max value="1"/>
      <base><path value="CodeableConcept.coding"/><min value="0"/><max value="*"/></base><type><code value="Coding"/></type></element>
  </snapshot>
</StructureDefinition>`
	n, err := load.XML([]byte(sd))
	if err != nil {
		t.Fatal(err)
	}
	set, err := Compile([]*fhirNode{n}, Options{Roots: []string{"http://example.org/x"}, Base: baseStub()})
	if err != nil {
		t.Fatal(err)
	}
	root := set.Profiles["http://example.org/x"].Root
	var v *elementT
	for _, ch := range root.Children {
		if ch.Name == "value[x]" {
			v = ch
		}
	}
	if v == nil || len(v.Types) != 1 || v.Types[0].Code != "CodeableConcept" || v.SliceName != "" {
		t.Fatalf("renamed choice not mapped to value[x]: %+v", v)
	}
	if len(v.Children) != 1 || v.Children[0].Name != "coding" || !v.Children[0].Repeats || v.Children[0].Min != 1 {
		t.Fatalf("children of the renamed choice: %+v", v.Children)
	}
	if !strings.HasPrefix(v.Children[0].ID, "Extension.") {
		t.Fatalf("truncated id not restored: %s", v.Children[0].ID)
	}
}
