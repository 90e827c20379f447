package broker

import (
	"testing"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/profile"
)

func profileValidator(t testing.TB) ProfileValidator {
	t.Helper()
	pv, err := profile.Default()
	if err != nil {
		t.Fatal(err)
	}
	return ProfileValidatorFunc(func(root *fhir.Node, event string) []fhir.Issue {
		return pv.ValidateBundle(root, profile.BundleOptions{Event: event})
	})
}

// TestValidExamplesPassProfiles runs the valid official examples through the
// generic rules and full profile validation together.
func TestValidExamplesPassProfiles(t *testing.T) {
	v := newValidator()
	v.Profiles = profileValidator(t)
	for _, f := range benchFiles {
		_, issues := v.Validate(loadExample(t, f))
		if errs := errorsOf(issues); len(errs) > 0 {
			t.Errorf("%s: %+v", f, errs)
		}
	}
}

// TestProfileFaultReported shows a profile-only fault (a code outside a
// required binding) reaching the publisher with its location.
func TestProfileFaultReported(t *testing.T) {
	v := newValidator()
	v.Profiles = profileValidator(t)
	root := loadExample(t, "vaccinations-1-new.xml")
	set("unknown-status")(t, root, "Bundle.entry[1].resource.status")
	_, issues := v.Validate(root)
	got := firstErr(issues)
	if got.Code != fhir.InvalidResource || got.Expression != "Bundle.entry[1].resource.status" {
		t.Fatalf("first error %+v\nall %+v", got, errorsOf(issues))
	}
}
