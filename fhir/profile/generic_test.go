package profile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ems-broker/ems/fhir"
)

// genericDefs are a profile on Basic, a complex extension, a CodeSystem and
// a ValueSet written for this test: nothing NHS, nothing embedded.
var genericDefs = []string{"TestBasic.json", "shoe-size.json", "CodeSystem-test.json", "ValueSet-test-codes.json"}

func readGeneric(t *testing.T, name string) []byte {
	t.Helper()
	d, err := os.ReadFile(filepath.Join("testdata", "generic", name))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func genericValidator(t *testing.T, edit func(name, def string) string) (*Validator, error) {
	t.Helper()
	var defs [][]byte
	for _, n := range genericDefs {
		d := string(readGeneric(t, n))
		if edit != nil {
			d = edit(n, d)
		}
		defs = append(defs, []byte(d))
	}
	return validator(t).Extend(defs...)
}

// TestGenericProfile validates against a StructureDefinition written for
// the test, through the same compiler and walker as the NHS profiles.
func TestGenericProfile(t *testing.T) {
	v, err := genericValidator(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	const profile = "http://example.org/fhir/StructureDefinition/TestBasic"
	valid := string(readGeneric(t, "basic-valid.json"))
	cases := []struct {
		name       string
		from, to   string
		typ, at    string
		diagnostic string
	}{
		{"valid", "", "", "", "", ""},
		{"code outside value set", `"code": "b1"`, `"code": "c"`, "code-invalid", "Basic.code.coding[0]", "code 'c'"},
		{"nested code accepted", `"code": "b1"`, `"code": "b"`, "", "", ""},
		{"closed slicing", `"system": "http://example.org/ids"`, `"system": "http://example.org/other"`, "structure", "Basic.identifier[0]", "closed slicing"},
		{"slice missing", `"system": "http://example.org/ids"`, `"system": "http://example.org/other"`, "required", "Basic", "Basic.identifier:local min 1, found 0"},
		{"prohibited", `"created"`, `"implicitRules": "http://x", "created"`, "structure", "Basic.implicitRules", "prohibited"},
		{"wrong target", `"Patient/123"`, `"Organization/123"`, "value", "Basic.subject.reference", "reference to Organization is not allowed"},
		{"extension value type", `"valueDecimal": 42.5`, `"valueString": "42"`, "structure", "Basic.extension[0].valueString", "type String is not allowed"},
		{"id format", `"id": "b1"`, `"id": "b_1"`, "value", "Basic.id", "not a valid id"},
		{"extension slice missing", `"url": "http://example.org/fhir/StructureDefinition/shoe-size"`, `"url": "http://example.org/other"`, "required", "Basic", "Basic.extension:shoeSize min 1, found 0"},
		{"date format", `"2020-02-29"`, `"2019-02-29"`, "value", "Basic.created", "not a calendar date"},
		{"required element", "-subject", "", "required", "Basic", "Basic.subject min 1, found 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := valid
			drop, isDrop := strings.CutPrefix(c.from, "-")
			if c.from != "" && !isDrop {
				if !strings.Contains(doc, c.from) {
					t.Fatalf("fixture lacks %q", c.from)
				}
				doc = strings.Replace(doc, c.from, c.to, 1)
			}
			n, err := fhir.ParseJSON([]byte(doc), fhir.DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			if isDrop {
				kept := n.Children[:0]
				for _, ch := range n.Children {
					if ch.Name != drop {
						kept = append(kept, ch)
					}
				}
				n.Children = kept
			}
			issues := v.Validate(n, "", nil, profile)
			var errs []string
			found := false
			for _, is := range issues {
				if !is.IsError() {
					continue
				}
				errs = append(errs, is.Type()+" | "+is.Expression+" | "+is.Diagnostics)
				if is.Type() == c.typ && is.Expression == c.at && strings.Contains(is.Diagnostics, c.diagnostic) {
					found = true
				}
			}
			if c.typ == "" && len(errs) > 0 {
				t.Fatalf("want no errors, got:\n%s", strings.Join(errs, "\n"))
			}
			if c.typ != "" && !found {
				t.Fatalf("want %s at %s containing %q, got:\n%s", c.typ, c.at, c.diagnostic, strings.Join(errs, "\n"))
			}
		})
	}
}

// TestUnsupportedRulesFailCompilation: a definition using a rule kind the
// validator cannot enforce must not load.
func TestUnsupportedRulesFailCompilation(t *testing.T) {
	cases := []struct {
		name, file, from, to, want string
	}{
		{"pattern", "TestBasic.json", `"fixedUri": "http://example.org/ids"`, `"patternUri": "http://example.org/ids"`, "patternUri is not supported"},
		{"type discriminator", "TestBasic.json", `"type": "value",
       "path": "system"`, `"type": "type",
       "path": "system"`, `discriminator type "type" is not supported`},
		{"unknown invariant", "TestBasic.json", `"key": "dom-2"`, `"key": "tst-1"`, "invariant tst-1"},
		{"changed invariant", "TestBasic.json", `"contained.contained.empty()"`, `"contained.empty()"`, "invariant dom-2"},
		{"missing required value set", "TestBasic.json", `ValueSet/test-codes"`, `ValueSet/nowhere"`, "value set http://example.org/fhir/ValueSet/nowhere not found"},
		{"maxLength", "TestBasic.json", `"fixedUri": "http://example.org/ids"`, `"fixedUri": "http://example.org/ids", "maxLength": 10`, "maxLength is not supported"},
		{"slice without discriminator value", "TestBasic.json", `"fixedUri": "http://example.org/ids"`, `"short": "no fixed value"`, "no fixed value on discriminator system"},
		{"unknown property", "TestBasic.json", `"fixedUri": "http://example.org/ids"`, `"fixedUri": "http://example.org/ids", "minValueInteger": 3`, "minValueInteger is not supported"},
		{"complex fixed value", "shoe-size.json", `"fixedUri": "http://example.org/fhir/StructureDefinition/shoe-size"`, `"fixedCoding": {"code": "x"}`, "fixed value of complex type"},
		{"extension context type", "shoe-size.json", `"contextType": "resource"`, `"contextType": "datatype"`, `contextType "datatype" is not supported`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := genericValidator(t, func(name, def string) string {
				if name != c.file {
					return def
				}
				if !strings.Contains(def, c.from) {
					t.Fatalf("%s lacks %q", name, c.from)
				}
				return strings.Replace(def, c.from, c.to, 1)
			})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want error containing %q, got %v", c.want, err)
			}
		})
	}
}
