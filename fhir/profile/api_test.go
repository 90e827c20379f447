package profile

import (
	"os"
	"strings"
	"testing"

	"github.com/ems-broker/ems/fhir"
)

func TestIssueCap(t *testing.T) {
	v, err := New(Options{MaxIssues: 3})
	if err != nil {
		t.Fatal(err)
	}
	b := readBundle(t, "testdata/examples/vaccinations-1-new.xml")
	imm := b.ChildrenNamed("entry")[1].Child("resource").Resource()
	for i := 0; i < 10; i++ {
		imm.Children = append(imm.Children, &fhir.Node{Name: "bogus" + string(rune('a'+i)), Value: "x", HasValue: true})
	}
	issues := v.ValidateBundle(b, BundleOptions{})
	if len(issues) != 4 {
		t.Fatalf("want 3 issues and the cut notice, got %d: %v", len(issues), issues)
	}
	if last := issues[3]; last.Severity != fhir.SeverityInformation || !strings.Contains(last.Diagnostics, "stopped after 3 issues") {
		t.Fatalf("last issue %+v", last)
	}
}

func TestUnknownMetaProfileWarns(t *testing.T) {
	b := readBundle(t, "testdata/examples/vaccinations-1-new.xml")
	issues := ValidateBundle(b, BundleOptions{})
	want := "unknown profile 'http://hl7.org/fhir/STU3/StructureDefinition/Bundle' not checked"
	for _, is := range issues {
		if is.Expression == "Bundle.meta.profile[0]" && strings.Contains(is.Diagnostics, want) {
			if is.Severity != fhir.SeverityWarning {
				t.Fatalf("severity %s, want warning", is.Severity)
			}
			return
		}
	}
	t.Fatalf("no warning for the non-canonical Bundle profile in %v", issues)
}

// TestMetaProfileAdds checks that a known meta.profile applies even when the
// caller names no profile, and that the event map applies without one.
func TestMetaProfileAdds(t *testing.T) {
	b := readBundle(t, "testdata/examples/vaccinations-1-new.xml")
	pat := b.ChildrenNamed("entry")[3].Child("resource").Resource()
	pat.Children = append(pat.Children, &fhir.Node{Name: "animal", Children: []*fhir.Node{{Name: "species", Children: []*fhir.Node{fhir.Prim("text", "dog")}}}})
	issues := Validate(pat, "Patient", nil) // no explicit profile: meta.profile names CareConnect-Patient-1
	found := false
	for _, is := range issues {
		if is.Expression == "Patient.animal" && strings.HasPrefix(is.Diagnostics, "CareConnect-Patient-1: ") {
			found = true
		}
	}
	if !found {
		t.Fatalf("meta.profile CareConnect-Patient-1 not applied: %v", issues)
	}
}

func TestProfileFor(t *testing.T) {
	for _, c := range []struct{ event, typ, want string }{
		{"vaccinations-1", "MessageHeader", EventMessageHeader},
		{"vaccinations-1", "Immunization", "https://fhir.hl7.org.uk/STU3/StructureDefinition/CareConnect-Immunization-1"},
		{"pds-change-of-gp-1", "EpisodeOfCare", "https://fhir.hl7.org.uk/STU3/StructureDefinition/CareConnect-EpisodeOfCare-1"},
		{"pds-record-change-1", "Provenance", ""},
		{"newborn-hearing-1", "Bundle", ""},
	} {
		if got := ProfileFor(c.event, c.typ); got != c.want {
			t.Errorf("ProfileFor(%s, %s) = %q, want %q", c.event, c.typ, got, c.want)
		}
	}
	v := validator(t)
	for typ := range careConnectTypes {
		if u := ProfileFor("vaccinations-1", typ); !v.Known(u) {
			t.Errorf("%s: profile %s is not compiled", typ, u)
		}
	}
}

func TestResourceTypeNotCompiled(t *testing.T) {
	v := validator(t)
	for _, c := range []struct {
		typ  string
		sev  fhir.Severity
		text string
	}{
		{"Questionnaire", fhir.SeverityWarning, "is not validated"},
		{"Patiant", fhir.SeverityError, "not an STU3 resource type"},
	} {
		issues := v.Validate(&fhir.Node{Name: c.typ, ResourceType: c.typ}, "", nil)
		if len(issues) != 1 || issues[0].Severity != c.sev || !strings.Contains(issues[0].Diagnostics, c.text) {
			t.Errorf("%s: %v", c.typ, issues)
		}
	}
}

// FuzzValidateJSON feeds whatever the JSON parser accepts to the validator,
// which must never panic (the publish path runs it on untrusted input).
func FuzzValidateJSON(f *testing.F) {
	f.Add([]byte(`{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9912003888"}]}`))
	f.Add([]byte(`{"resourceType":"Bundle","type":"message","entry":[{"fullUrl":"urn:uuid:1","resource":{"resourceType":"MessageHeader","event":{"code":"x"}}}]}`))
	f.Add([]byte(`{"resourceType":"Immunization","extension":[{"url":"https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-VaccinationProcedure-1","valueString":"x"}],"contained":[{"resourceType":"Patient"}]}`))
	v, err := New(Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := fhir.ParseJSON(data, fhir.DefaultLimits())
		if err != nil {
			return
		}
		if n.ResourceType == "Bundle" {
			v.ValidateBundle(n, BundleOptions{})
			return
		}
		v.Validate(n, "", func(string) *fhir.Node { return n }, ProfileFor("vaccinations-1", n.ResourceType))
	})
}

// TestConcurrentUse: one Validator serves the publish path's goroutines.
func TestConcurrentUse(t *testing.T) {
	v := validator(t)
	var data [][]byte
	for _, f := range exampleFiles(t) {
		d, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, d)
	}
	done := make(chan []string)
	for g := 0; g < 4; g++ {
		go func() {
			var errs []string
			for _, d := range data {
				b, err := fhir.ParseXML(d, fhir.DefaultLimits())
				if err != nil {
					errs = append(errs, err.Error())
					continue
				}
				for _, is := range v.ValidateBundle(b, BundleOptions{}) {
					if is.IsError() {
						errs = append(errs, is.Diagnostics)
					}
				}
			}
			done <- errs
		}()
	}
	for g := 0; g < 4; g++ {
		if errs := <-done; len(errs) != 1 { // the +58:00 example
			t.Errorf("goroutine saw %d errors, want 1: %v", len(errs), errs)
		}
	}
}
