package broker

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
)

const examples = "../testdata/nems-examples"

func loadExample(t testing.TB, name string) *fhir.Node {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(examples, name))
	if err != nil {
		t.Fatal(err)
	}
	root, err := fhir.ParseXML(b, fhir.DefaultLimits())
	if err != nil {
		t.Fatalf("parsing %s: %v", name, err)
	}
	return root
}

func newValidator() *Validator {
	return &Validator{Catalog: catalog.Default(), CheckNHSNumber: true}
}

// firstErr returns the first error issue, or a zero Issue.
func firstErr(issues []fhir.Issue) fhir.Issue {
	for _, i := range issues {
		if i.IsError() {
			return i
		}
	}
	return fhir.Issue{}
}

func errorsOf(issues []fhir.Issue) []fhir.Issue {
	var out []fhir.Issue
	for _, i := range issues {
		if i.IsError() {
			out = append(out, i)
		}
	}
	return out
}

// TestExamples gives every official example the outcome its INDEX.md implies:
// no error for the valid ones, and for the defective ones at least the fault
// INDEX.md names (often with others it does not list, such as XML element
// order, which its checker did not look at).
func TestExamples(t *testing.T) {
	const (
		routingNHS = "Bundle.entry[0].resource.extension[0].extension[0].valueIdentifier.value"
		eventCode  = "Bundle.entry[0].resource.event.code"
	)
	type fault struct {
		code fhir.SpineCode
		at   string // "" = anywhere
	}
	notSupported := []fault{{fhir.InvalidCodeValue, eventCode}}
	// Three drafts misspell onsetDateTime and one repeats effectivePeriod:
	// they are not FHIR at all, whatever their event.
	malformed := []fault{{fhir.MessageNotWellFormed, ""}}
	tests := []struct {
		file   string
		faults []fault // nil = accepted
	}{
		{"BirthNotificationWithMother.xml", []fault{{fhir.InvalidNHSNumber, routingNHS}}},
		{"BirthNotificationWithoutMother.xml", nil},
		{"PDS-Change-Of-Address-ems-example.xml", nil},
		{"PDS-Change-Of-GP-ems-example.xml", nil},
		{"PDS-Death-Notification-formal-ems-example.xml", []fault{{fhir.InvalidNHSNumber, "Bundle.entry[2].resource.identifier[0].value"}}},
		{"PDS-Death-Notification-informal-ems-example.xml", []fault{{fhir.InvalidNHSNumber, "Bundle.entry[2].resource.identifier[0].value"}}},
		{"PDS-Death-Notification-removed-ems-example.xml", []fault{{fhir.InvalidNHSNumber, "Bundle.entry[2].resource.identifier[0].value"}}},
		{"PDS-Record-Change-Citizen.xml", nil},
		{"PDS-Record-Change.xml", nil},
		{"Professional-Contacts-1-delete.xml", nil},
		{"Professional-Contacts-1-new.xml", nil},
		{"Professional-Contacts-1-update.xml", nil},
		{"blood-spot-test-outcome-1-delete.xml", nil},
		{"blood-spot-test-outcome-1-new.xml", nil},
		{"blood-spot-test-outcome-1-update.xml", nil},
		{"newborn-hearing-1-delete.xml", nil},
		{"newborn-hearing-1-new.xml", nil},
		{"newborn-hearing-1-update.xml", nil},
		{"nipe-outcome-1-delete.xml", nil},
		{"nipe-outcome-1-new.xml", nil},
		{"nipe-outcome-1-update.xml", []fault{{fhir.InvalidValue, "Bundle.entry[0].resource.timestamp"}}},
		{"vaccinations-1-delete.xml", nil},
		{"vaccinations-1-new.xml", nil},
		{"vaccinations-1-notgiven-new.xml", nil},
		{"vaccinations-1-update.xml", nil},

		// Unreleased DCH events: not supported unless enabled.
		{"feature-DCH_Release_Changes/FailsafeMessage.xml", notSupported},
		{"feature-DCH_Release_Changes/FailsafeMessageWithIncompleteElements.xml", notSupported},
		{"feature-DCH_Release_Changes/FailsafeResponse-delete.xml", notSupported},
		{"feature-DCH_Release_Changes/FailsafeResponse-new.xml", notSupported},
		{"feature-DCH_Release_Changes/FailsafeResponse-update.xml", notSupported},
		{"feature-DCH_Release_Changes/allergies-adverse-reactions-delete.xml", malformed},
		{"feature-DCH_Release_Changes/allergies-adverse-reactions-new.xml", malformed},
		{"feature-DCH_Release_Changes/allergies-adverse-reactions-update.xml", malformed},
		{"feature-DCH_Release_Changes/legal-information-new.xml", malformed},
		{"feature-DCH_Release_Changes/observations-delete.xml", notSupported},
		{"feature-DCH_Release_Changes/observations-new.xml", notSupported},
		{"feature-DCH_Release_Changes/observations-update.xml", notSupported},

		// Removed and renamed examples.
		{"historical/Blood-Spot-Test-Outcome-1-delete.xml", nil},
		{"historical/Blood-Spot-Test-Outcome-1-new.xml", nil},
		// INDEX.md calls it valid, but it sends messageEventType "update",
		// which events.md §3.1 says screening events never use: we follow
		// the specification.
		{"historical/Blood-Spot-Test-Outcome-1-update.xml", []fault{{fhir.InvalidCodeValue, "Bundle.entry[0].resource.extension[1].valueCodeableConcept.coding[0].code"}}},
		{"historical/FailsafeResponse.xml", append(notSupported, fault{fhir.InvalidResource, "Bundle.entry[0].resource.source.contact"})},
		{"historical/PDS-Birth-Notification-ems-example.xml", notSupported},
		{"historical/Professional-Contacts-example.xml", nil},
		{"historical/demographics-record-change-1.xml", notSupported},
		{"historical/encounter_1_1.xml", notSupported},
		{"historical/encounter_1_2.xml", notSupported},
		{"historical/pds_contact_details_citizen_1.xml", notSupported},
		// INDEX.md calls it valid; profile validation finds a leading
		// space inside two coding.system URIs, which a uri cannot hold.
		{"historical/vaccinations-1-example.xml", []fault{{fhir.InvalidResource, "Bundle.entry[7].resource.code[1].coding[0].system"}}},
	}
	v := newValidator()
	v.Profiles = profileValidator(t)
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(examples, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			var issues []fhir.Issue
			root, err := fhir.ParseXML(b, fhir.DefaultLimits())
			if err != nil {
				issues = append(issues, decodeIssue(err))
			} else {
				issues = append(fhir.CheckElementOrder(root), issues...)
				_, found := v.Validate(root)
				issues = append(issues, found...)
			}
			errs := errorsOf(issues)
			if tt.faults == nil {
				if len(errs) > 0 {
					t.Fatalf("valid example rejected: %+v", errs)
				}
				return
			}
			for _, f := range tt.faults {
				found := false
				for _, e := range errs {
					if e.Code == f.code && (f.at == "" || e.Expression == f.at) {
						found = true
					}
				}
				if !found {
					t.Errorf("fault %s at %q not reported; errors: %+v", f.code, f.at, errs)
				}
			}
		})
	}
}

// TestDraftEventsEnabled shows that a deployment that enables a draft event
// accepts its examples, apart from their known NHS-number defects.
func TestDraftEventsEnabled(t *testing.T) {
	on := true
	cat, err := catalog.Default().Apply(map[string]catalog.Override{
		"observations-1":                    {Enabled: &on},
		"allergies-and-adverse-reactions-1": {Enabled: &on},
	})
	if err != nil {
		t.Fatal(err)
	}
	v := &Validator{Catalog: cat, CheckNHSNumber: true}
	for _, f := range []string{"observations-new.xml", "observations-update.xml", "observations-delete.xml"} {
		root := loadExample(t, "feature-DCH_Release_Changes/"+f)
		msg, issues := v.Validate(root)
		if errs := errorsOf(issues); len(errs) > 0 {
			t.Errorf("%s: %+v", f, errs)
		}
		if msg.Event.Code == "" || msg.NHSNumber == "" {
			t.Errorf("%s: message facts missing: %+v", f, msg)
		}
	}
}

// TestLegacyEMSGeneration refuses every legacy EMS-generation asset: they use
// the withdrawn EMS-MessageHeader-1 model, an ITK wrapper, or are not
// bundles at all.
func TestLegacyEMSGeneration(t *testing.T) {
	dir := filepath.Join(examples, "stu3-fhir-assets")
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[fhir.SpineCode]bool{
		fhir.InvalidCodeSystem: true, fhir.InvalidCodeValue: true, fhir.MessageNotWellFormed: true,
		fhir.InvalidResource: true,
	}
	v := newValidator()
	n := 0
	for _, f := range files {
		if !strings.HasSuffix(f.Name(), ".xml") {
			continue
		}
		n++
		b, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		root, err := fhir.ParseXML(b, fhir.DefaultLimits())
		if err != nil {
			continue // refused as not well formed: fine
		}
		_, issues := v.Validate(root)
		got := firstErr(issues)
		if got.Code == "" || !allowed[got.Code] {
			t.Errorf("%s: first error %q (%s), want a refusal as legacy", f.Name(), got.Code, got.Diagnostics)
		}
	}
	if n < 60 {
		t.Fatalf("only %d legacy files found", n)
	}
}

// find follows a location such as "Bundle.entry[0].resource.event.code" in
// a tree; the resource container step descends into the resource.
func find(t *testing.T, root *fhir.Node, path string) (parent, node *fhir.Node) {
	t.Helper()
	parts := strings.Split(path, ".")
	if parts[0] != root.Name {
		t.Fatalf("path %s does not start at %s", path, root.Name)
	}
	cur := root
	for _, p := range parts[1:] {
		name, idx := p, 0
		if i := strings.IndexByte(p, '['); i >= 0 {
			name = p[:i]
			n, err := strconv.Atoi(strings.TrimSuffix(p[i+1:], "]"))
			if err != nil {
				t.Fatalf("bad path step %q", p)
			}
			idx = n
		}
		kids := cur.ChildrenNamed(name)
		if idx >= len(kids) {
			t.Fatalf("path %s: no %s", path, p)
		}
		parent, cur = cur, kids[idx]
		if name == "resource" {
			parent, cur = cur, cur.Resource()
		}
	}
	return parent, cur
}

func remove(parent, child *fhir.Node) {
	for i, c := range parent.Children {
		if c == child {
			parent.Children = append(parent.Children[:i], parent.Children[i+1:]...)
			return
		}
	}
}

func set(value string) func(t *testing.T, root *fhir.Node, path string) {
	return func(t *testing.T, root *fhir.Node, path string) {
		_, n := find(t, root, path)
		n.Value, n.HasValue = value, true
	}
}

func del(t *testing.T, root *fhir.Node, path string) {
	parent, n := find(t, root, path)
	remove(parent, n)
}

const (
	mh      = "Bundle.entry[0].resource"
	routing = mh + ".extension[0]"
	met     = mh + ".extension[1]"
)

// TestRules mutates a valid message, one rule at a time, and expects the
// exact code, HTTP status and location.
func TestRules(t *testing.T) {
	type mutation struct {
		path string
		do   func(t *testing.T, root *fhir.Node, path string)
	}
	tests := []struct {
		name   string
		base   string
		muts   []mutation
		code   fhir.SpineCode
		status int
		at     string
	}{
		{"bundle type not message", "vaccinations-1-new.xml", []mutation{{"Bundle.type", set("collection")}}, fhir.InvalidResource, 422, "Bundle.type"},
		{"bundle type missing", "vaccinations-1-new.xml", []mutation{{"Bundle.type", del}}, fhir.InvalidResource, 422, "Bundle.type"},
		{"header not first", "vaccinations-1-new.xml", []mutation{{"Bundle.entry[0]", func(t *testing.T, root *fhir.Node, p string) {
			parent, n := find(t, root, p)
			remove(parent, n)
			parent.Children = append(parent.Children, n)
		}}}, fhir.InvalidResource, 422, "Bundle.entry[0].resource"},
		{"header id missing", "vaccinations-1-new.xml", []mutation{{mh + ".id", del}}, fhir.InvalidResource, 422, mh + ".id"},
		{"header id not uuid", "vaccinations-1-new.xml", []mutation{{mh + ".id", set("message-1")}}, fhir.InvalidResource, 422, mh + ".id"},
		{"event system wrong", "vaccinations-1-new.xml", []mutation{{mh + ".event.system", set("http://example.org/events")}}, fhir.InvalidCodeSystem, 400, mh + ".event.system"},
		{"event system legacy", "vaccinations-1-new.xml", []mutation{{mh + ".event.system", set("https://fhir.nhs.uk/STU3/CodeSystem/EMS-EventType-1")}}, fhir.InvalidCodeSystem, 400, mh + ".event.system"},
		{"event code unknown", "vaccinations-1-new.xml", []mutation{{mh + ".event.code", set("vaccinations-2")}}, fhir.InvalidCodeValue, 400, mh + ".event.code"},
		{"event code zero width space", "vaccinations-1-new.xml", []mutation{{mh + ".event.code", set("\u200bvaccinations-1")}}, fhir.InvalidCodeValue, 400, mh + ".event.code"},
		{"event not enabled", "vaccinations-1-new.xml", []mutation{{mh + ".event.code", set("observations-1")}}, fhir.InvalidCodeValue, 400, mh + ".event.code"},
		{"event display missing", "vaccinations-1-new.xml", []mutation{{mh + ".event.display", del}}, fhir.InvalidResource, 422, mh + ".event.display"},
		{"message event type missing", "vaccinations-1-new.xml", []mutation{{met, del}}, fhir.InvalidResource, 422, mh + ".extension"},
		{"message event type system", "vaccinations-1-new.xml", []mutation{{met + ".valueCodeableConcept.coding[0].system", set("https://fhir.nhs.uk/STU3/CodeSystem/EMS-MessageEventType-1")}}, fhir.InvalidCodeSystem, 400, met + ".valueCodeableConcept.coding[0].system"},
		{"message event type unknown", "vaccinations-1-new.xml", []mutation{{met + ".valueCodeableConcept.coding[0].code", set("cancel")}}, fhir.InvalidCodeValue, 400, met + ".valueCodeableConcept.coding[0].code"},
		{"update not allowed for screening", "newborn-hearing-1-new.xml", []mutation{{met + ".valueCodeableConcept.coding[0].code", set("update")}}, fhir.InvalidCodeValue, 400, met + ".valueCodeableConcept.coding[0].code"},
		{"delete not allowed for PDS", "PDS-Change-Of-GP-ems-example.xml", []mutation{{met + ".valueCodeableConcept.coding[0].code", set("delete")}}, fhir.InvalidCodeValue, 400, met + ".valueCodeableConcept.coding[0].code"},
		{"routing missing", "vaccinations-1-new.xml", []mutation{{routing, del}}, fhir.InvalidResource, 422, mh + ".extension"},
		{"routing nhs system", "vaccinations-1-new.xml", []mutation{{routing + ".extension[0].valueIdentifier.system", set("http://fhir.nhs.net/Id/nhs-number")}}, fhir.InvalidIdentifierSystem, 400, routing + ".extension[0].valueIdentifier.system"},
		{"routing nhs mod11", "vaccinations-1-new.xml", []mutation{{routing + ".extension[0].valueIdentifier.value", set("9912003889")}}, fhir.InvalidNHSNumber, 400, routing + ".extension[0].valueIdentifier.value"},
		{"routing nhs 9 digits", "vaccinations-1-new.xml", []mutation{{routing + ".extension[0].valueIdentifier.value", set("991200388")}}, fhir.InvalidNHSNumber, 400, routing + ".extension[0].valueIdentifier.value"},
		{"routing name missing", "vaccinations-1-new.xml", []mutation{{routing + ".extension[1]", del}}, fhir.InvalidResource, 422, routing + ".extension"},
		{"routing birth date missing", "vaccinations-1-new.xml", []mutation{{routing + ".extension[2]", del}}, fhir.InvalidResource, 422, routing + ".extension"},
		{"routing birth date offset", "vaccinations-1-new.xml", []mutation{{routing + ".extension[2].valueDateTime", set("2017-10-02T12:00:00")}}, fhir.InvalidValue, 400, routing + ".extension[2].valueDateTime"},
		{"routing nhs differs from patient", "vaccinations-1-new.xml", []mutation{{routing + ".extension[0].valueIdentifier.value", set("9434765919")}}, fhir.ConflictingValues, 400, routing + ".extension[0].valueIdentifier.value"},
		{"lastUpdated missing", "vaccinations-1-new.xml", []mutation{{mh + ".meta.lastUpdated", del}}, fhir.InvalidResource, 422, mh + ".meta.lastUpdated"},
		{"lastUpdated bad offset", "vaccinations-1-new.xml", []mutation{{mh + ".meta.lastUpdated", set("2017-11-01T15:00:33+15:00")}}, fhir.InvalidValue, 400, mh + ".meta.lastUpdated"},
		{"timestamp missing", "vaccinations-1-new.xml", []mutation{{mh + ".timestamp", del}}, fhir.InvalidResource, 422, mh + ".timestamp"},
		{"timestamp without offset", "vaccinations-1-new.xml", []mutation{{mh + ".timestamp", set("2017-02-14T15:00:00")}}, fhir.InvalidValue, 400, mh + ".timestamp"},
		{"source contact missing", "vaccinations-1-new.xml", []mutation{{mh + ".source.contact", del}}, fhir.InvalidResource, 422, mh + ".source.contact"},
		{"source endpoint missing", "vaccinations-1-new.xml", []mutation{{mh + ".source.endpoint", del}}, fhir.InvalidResource, 422, mh + ".source.endpoint"},
		{"responsible unresolved", "vaccinations-1-new.xml", []mutation{{mh + ".responsible.reference", set("urn:uuid:00000000-0000-0000-0000-000000000000")}}, fhir.ReferenceNotFound, 422, mh + ".responsible.reference"},
		{"focus unresolved", "vaccinations-1-new.xml", []mutation{{mh + ".focus.reference", set("urn:uuid:00000000-0000-0000-0000-000000000000")}}, fhir.ReferenceNotFound, 422, mh + ".focus.reference"},
		{"focus wrong type", "vaccinations-1-new.xml", []mutation{{mh + ".focus.reference", set("urn:uuid:3ff6d789-af64-4d9c-aa1d-0087d29e9e1c")}}, fhir.InvalidResource, 422, mh + ".focus.reference"},
		{"fullUrl missing", "vaccinations-1-new.xml", []mutation{{"Bundle.entry[3].fullUrl", del}}, fhir.InvalidResource, 422, "Bundle.entry[3].fullUrl"},
		{"fullUrl not a urn uuid", "vaccinations-1-new.xml", []mutation{{"Bundle.entry[3].fullUrl", set("urn:uuid:not-a-uuid")}}, fhir.InvalidResource, 422, "Bundle.entry[3].fullUrl"},
		{"fullUrl duplicated", "vaccinations-1-new.xml", []mutation{{"Bundle.entry[3].fullUrl", func(t *testing.T, root *fhir.Node, p string) {
			_, first := find(t, root, "Bundle.entry[2].fullUrl")
			set(first.Value)(t, root, p)
		}}}, fhir.InvalidResource, 422, "Bundle.entry[3].fullUrl"},
		{"patient nhs mod11", "vaccinations-1-new.xml", []mutation{{"Bundle.entry[3].resource.identifier[0].value", set("9912003880")}}, fhir.InvalidNHSNumber, 400, "Bundle.entry[3].resource.identifier[0].value"},
		{"receiver present", "vaccinations-1-new.xml", []mutation{{mh, func(t *testing.T, root *fhir.Node, p string) {
			_, n := find(t, root, p)
			n.Children = append(n.Children, &fhir.Node{Name: "receiver", Children: []*fhir.Node{fhir.Prim("reference", "urn:uuid:3ff6d789-af64-4d9c-aa1d-0087d29e9e1c")}})
		}}}, fhir.InvalidElement, 400, mh + ".receiver"},
		{"immunization missing", "vaccinations-1-new.xml", []mutation{{"Bundle.entry[1]", del}}, fhir.ReferenceNotFound, 422, mh + ".focus.reference"},
		{"second patient", "vaccinations-1-new.xml", []mutation{{"Bundle.entry[3]", func(t *testing.T, root *fhir.Node, p string) {
			_, n := find(t, root, p)
			cp := deepCopy(n)
			set("urn:uuid:11111111-1111-1111-1111-111111111111")(t, &fhir.Node{Name: "x", Children: []*fhir.Node{cp}}, "x.entry.fullUrl")
			root.Children = append(root.Children, cp)
		}}}, fhir.InvalidResource, 422, "Bundle.entry"},
		{"nipe with too few procedures", "nipe-outcome-1-new.xml", []mutation{{"Bundle.entry[5]", del}, {"Bundle.entry[5]", del}}, fhir.InvalidResource, 422, "Bundle.entry"},
	}
	v := newValidator()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := loadExample(t, tt.base)
			if _, before := v.Validate(root); len(errorsOf(before)) > 0 {
				t.Fatalf("base %s not valid: %+v", tt.base, errorsOf(before))
			}
			for _, m := range tt.muts {
				m.do(t, root, m.path)
			}
			_, issues := v.Validate(root)
			got := firstErr(issues)
			if got.Code != tt.code || got.Expression != tt.at || got.Code.HTTPStatus() != tt.status {
				t.Fatalf("first error = %s (%d) at %q: %s\nwant %s (%d) at %q\nall: %+v", got.Code, got.Code.HTTPStatus(), got.Expression, got.Diagnostics, tt.code, tt.status, tt.at, errorsOf(issues))
			}
		})
	}
}

// TestAllFailuresReported checks that one request reports every fault.
func TestAllFailuresReported(t *testing.T) {
	root := loadExample(t, "vaccinations-1-new.xml")
	set("9912003889")(t, root, routing+".extension[0].valueIdentifier.value")
	set("2017-02-14T15:00:00")(t, root, mh+".timestamp")
	del(t, root, mh+".source.contact")
	_, issues := newValidator().Validate(root)
	want := map[string]fhir.SpineCode{
		routing + ".extension[0].valueIdentifier.value": fhir.InvalidNHSNumber,
		mh + ".timestamp":      fhir.InvalidValue,
		mh + ".source.contact": fhir.InvalidResource,
	}
	for _, i := range errorsOf(issues) {
		if want[i.Expression] == i.Code {
			delete(want, i.Expression)
		}
	}
	if len(want) > 0 {
		t.Fatalf("not reported: %v\nall: %+v", want, errorsOf(issues))
	}
}

func TestRelaxedNHSNumber(t *testing.T) {
	v := newValidator()
	v.CheckNHSNumber = false
	msg, issues := v.Validate(loadExample(t, "BirthNotificationWithMother.xml"))
	if errs := errorsOf(issues); len(errs) > 0 {
		t.Fatalf("relaxed check still fails: %+v", errs)
	}
	if msg.NHSNumber != "1112223330" {
		t.Fatalf("NHS number = %q", msg.NHSNumber)
	}
}

func TestWithdrawnAndDeprecated(t *testing.T) {
	cat, err := catalog.Default().Apply(map[string]catalog.Override{
		"vaccinations-1":    {State: catalog.Withdrawn},
		"newborn-hearing-1": {State: catalog.Deprecated},
	})
	if err != nil {
		t.Fatal(err)
	}
	v := &Validator{Catalog: cat, CheckNHSNumber: true}
	_, issues := v.Validate(loadExample(t, "vaccinations-1-new.xml"))
	if got := firstErr(issues); got.Code != fhir.Withdrawn || got.Code.HTTPStatus() != 422 {
		t.Fatalf("withdrawn: %+v", got)
	}
	msg, issues := v.Validate(loadExample(t, "newborn-hearing-1-new.xml"))
	if errs := errorsOf(issues); len(errs) > 0 || msg.Event.State != catalog.Deprecated {
		t.Fatalf("deprecated: %+v %+v", msg, errs)
	}
}

func TestIssueCap(t *testing.T) {
	root := loadExample(t, "blood-spot-test-outcome-1-new.xml")
	// Break every Procedure's subject reference target NHS number... simpler:
	// make every dateTime in the bundle lose its offset.
	var strip func(n *fhir.Node)
	strip = func(n *fhir.Node) {
		if len(n.Value) > 19 && n.Value[10] == 'T' {
			n.Value = n.Value[:19]
		}
		for _, c := range n.Children {
			strip(c)
		}
	}
	strip(root)
	v := newValidator()
	v.MaxIssues = 3
	_, issues := v.Validate(root)
	if len(issues) != 4 || issues[3].Severity != fhir.SeverityInformation {
		t.Fatalf("want 3 issues and a note, got %d: %+v", len(issues), issues)
	}
}

func deepCopy(n *fhir.Node) *fhir.Node {
	cp := *n
	cp.Children = make([]*fhir.Node, len(n.Children))
	for i, c := range n.Children {
		cp.Children[i] = deepCopy(c)
	}
	return &cp
}
