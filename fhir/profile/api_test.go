package profile

import (
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
