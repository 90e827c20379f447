package profile

import (
	"os"
	"strings"
	"testing"

	"github.com/ems-broker/ems/fhir"
)

// responseTask is the only profile with ordered slicing (Task.input, closed,
// discriminated by type.coding.code).
const responseTask = "https://fhir.nhs.uk/STU3/StructureDefinition/EMS-EventMessageResponse-Task-1"

// TestOrderedSlicing edits testdata/task-response.json. The profile
// contradicts itself (reason.coding.system is fixed to a ValueSet URL that
// its own required binding excludes; messageID's fixed type system is not in
// the bound value set), so the unedited Task has those errors; the test
// checks only that each edit adds its own issue.
func TestOrderedSlicing(t *testing.T) {
	v := validator(t)
	load := func(t *testing.T) *fhir.Node {
		d, err := os.ReadFile("testdata/task-response.json")
		if err != nil {
			t.Fatal(err)
		}
		n, err := fhir.ParseJSON(d, fhir.DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	inputs := func(n *fhir.Node) []int {
		var idx []int
		for i, c := range n.Children {
			if c.Name == "input" {
				idx = append(idx, i)
			}
		}
		return idx
	}
	cases := []struct {
		name, typ, at, diagnostic string
		edit                      func(n *fhir.Node)
	}{
		{"out of order", "structure", "Task.input[1]", "slice responseLevel out of order", func(n *fhir.Node) {
			in := inputs(n)
			n.Children[in[0]], n.Children[in[1]] = n.Children[in[1]], n.Children[in[0]]
		}},
		{"closed", "structure", "Task.input[2]", "does not match any slice of a closed slicing", func(n *fhir.Node) {
			extra := *n.Children[inputs(n)[1]]
			extra.Children = []*fhir.Node{{Name: "type", Children: []*fhir.Node{{Name: "coding", Children: []*fhir.Node{
				fhir.Prim("system", "https://fhir.nhs.uk/STU3/CodeSystem/EMS-EventMessageResponseInput-1"), fhir.Prim("code", "009")}}}},
				fhir.Prim("valueString", "x")}
			n.Children = append(n.Children, &extra)
		}},
		{"slice missing", "required", "Task", "Task.input:messageID min 1, found 0", func(n *fhir.Node) {
			i := inputs(n)[1]
			n.Children = append(n.Children[:i:i], n.Children[i+1:]...)
		}},
		{"fixed in slice", "value", "Task.input[0].type.coding[0].display", "does not equal the fixed value 'Response Level'", func(n *fhir.Node) {
			n.Children[inputs(n)[0]].Get("type", "coding", "display").Value = "Level"
		}},
	}
	base := map[string]bool{}
	for _, is := range v.Validate(load(t), "", nil, responseTask) {
		base[is.Expression+is.Diagnostics] = true
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := load(t)
			c.edit(n)
			var got []string
			for _, is := range v.Validate(n, "", nil, responseTask) {
				if is.Type() == c.typ && is.Expression == c.at && strings.Contains(is.Diagnostics, c.diagnostic) && !base[is.Expression+is.Diagnostics] {
					return
				}
				got = append(got, is.Type()+" | "+is.Expression+" | "+is.Diagnostics)
			}
			t.Fatalf("want %s at %s containing %q, got:\n%s", c.typ, c.at, c.diagnostic, strings.Join(got, "\n"))
		})
	}
}
