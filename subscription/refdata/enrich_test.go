package refdata

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
	"github.com/ems-broker/ems/subscription"
)

const (
	nhsMover  = "9912003888" // the change-of-address fixture's patient
	nhsOther  = "9434765919"
	nhsHidden = "9000000009"
)

func readEvent(t testing.TB, name string, replace ...string) *fhir.Node {
	t.Helper()
	b, err := os.ReadFile("testdata/events/" + name)
	if err != nil {
		t.Fatal(err)
	}
	b = []byte(strings.NewReplacer(replace...).Replace(string(b)))
	n, err := fhir.Parse(b, fhir.FormatXML, fhir.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// rulesFixture is reference data, a subscription store with one generic
// subscription per rule (and a few filters), and the real matcher.
type rulesFixture struct {
	svc   *Service
	subs  *subscription.Store
	m     *subscription.Matcher
	names map[string]string // subscription id → name
}

func newRulesFixture(t *testing.T) *rulesFixture {
	t.Helper()
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	db := openDB(t)
	svc, err := New(Options{DB: db, Logger: quietLogger(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		k    Kind
		file string
	}{{NSPL, "nspl-2025-11.csv"}, {SubICB, "subicb-2024.csv"}, {Practices, "epraccur.csv"}} {
		importFile(t, svc.Store(), f.k, f.file)
	}
	subs, err := subscription.NewStore(subscription.StoreOptions{DB: db, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	fx := &rulesFixture{svc: svc, subs: subs, names: map[string]string{},
		m: subscription.NewMatcher(subscription.MatcherOptions{Index: subs, Catalog: catalog.Default(), Now: func() time.Time { return now }})}
	events := "&MessageHeader.event=pds-change-of-address-1&MessageHeader.event=pds-change-of-gp-1&MessageHeader.event=vaccinations-1&MessageHeader.event=pds-birth-notification-1&MessageHeader.event=pds-death-notification-1"
	for name, crit := range map[string]string{
		"gp-B86056":           "subscriptionRuleType=GP_GP_GP&Organization.identifier=B86056",
		"gp-A84005":           "subscriptionRuleType=GP_GP_GP&Organization.identifier=A84005",
		"gpsub-15F":           "subscriptionRuleType=CHO_GP_CCG&Organization.identifier=15F",
		"gpsub-00L":           "subscriptionRuleType=CHO_GP_CCG&Organization.identifier=00L",
		"pcsub-X2C4Y":         "subscriptionRuleType=CHO_POSTCODE_CCG&Organization.identifier=X2C4Y",
		"pcsub-15F":           "subscriptionRuleType=CHO_POSTCODE_CCG&Organization.identifier=15F",
		"la-leeds":            "subscriptionRuleType=UHV_POSTCODE_LACODE&Organization.identifier=E08000035",
		"la-kirklees":         "subscriptionRuleType=UHV_POSTCODE_LACODE&Organization.identifier=E08000034",
		"country-england":     "subscriptionRuleType=COUNTRYCODE&Organization.identifier=E92000001",
		"country-wales":       "subscriptionRuleType=COUNTRYCODE&Organization.identifier=W92000004",
		"england-unreg":       "subscriptionRuleType=COUNTRYCODE&Organization.identifier=E92000001&GPRegistration=UnregisteredOnly",
		"england-under-10":    "subscriptionRuleType=COUNTRYCODE&Organization.identifier=E92000001&Patient.age=lt10",
		"explicit-mover":      "Patient.identifier=https://fhir.nhs.uk/Id/nhs-number|" + nhsMover,
		"explicit-hidden":     "Patient.identifier=https://fhir.nhs.uk/Id/nhs-number|" + nhsHidden,
		"country-england-reg": "subscriptionRuleType=COUNTRYCODE&Organization.identifier=E92000001&GPRegistration=RegisteredOnly",
	} {
		for _, ev := range strings.Split(strings.TrimPrefix(events, "&"), "&") {
			c, cerr := subscription.ParseCriteria("/Bundle?type=message&" + ev + "&" + crit)
			if cerr != nil {
				t.Fatalf("%s: %v", name, cerr)
			}
			sub, err := subs.Create(subscription.Subscription{Status: subscription.StatusActive, Owner: "X26",
				Contacts: []subscription.Contact{{System: "url", Value: "https://directory.spineservices.nhs.uk/STU3/Organization/X26", Use: "work"}},
				Reason:   name, CriteriaText: "x", Criteria: c,
				Channel: subscription.Channel{Type: subscription.ChannelMessage, Endpoint: "MBX-" + name}}, "test", subscription.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			fx.names[sub.ID] = name
		}
	}
	return fx
}

// match runs what delivery runs: headers → facts, enrich, match.
func (fx *rulesFixture) match(t *testing.T, code, nhs string, bundle *fhir.Node) ([]string, subscription.EventFacts, Enrichment) {
	t.Helper()
	f, en, err := fx.svc.Enrich(context.Background(), subscription.EventFacts{EventCode: code, MessageEventType: "new", NHSNumber: nhs}, bundle)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := fx.m.Match(f)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range ms {
		names = append(names, fx.names[m.SubscriptionID])
		if m.Kind == subscription.Generic && m.RefData != "nspl@1,subicb@1,epraccur@1" {
			t.Errorf("match %s explanation has RefData %q", fx.names[m.SubscriptionID], m.RefData)
		}
	}
	slices.Sort(names)
	return names, f, en
}

func TestEveryRule(t *testing.T) {
	fx := newRulesFixture(t)
	ctx := context.Background()
	reg, unreg := true, false
	for _, p := range []Patient{
		// What PDS knew before the move: the change-of-address bundle
		// carries no GP organisation, so the practice comes from here.
		{NHSNumber: nhsMover, GPPractice: "B86056", Registered: &reg, Postcode: "WF140BQ"},
		// Northumberland, registered in Northumberland.
		{NHSNumber: nhsOther, GPPractice: "A84005", Registered: &reg, Postcode: "CA87JG", BirthDate: "1950-01-01"},
		{NHSNumber: nhsHidden, GPPractice: "B86056", Registered: &reg, Postcode: "LS177DF", Sensitive: true},
	} {
		if err := fx.svc.Patients().Put(p); err != nil {
			t.Fatal(err)
		}
	}
	// The change-of-address fixture: moved from WF14 0BQ (Kirklees, X2C4Y)
	// to LS17 7DF (Leeds, 15F); registered at B86056 (15F); born 2019.
	coa := readEvent(t, "PDS-Change-Of-Address-ems-example.xml")
	got, f, en := fx.match(t, "pds-change-of-address-1", nhsMover, coa)
	want := []string{"country-england", "country-england-reg", "england-under-10", "explicit-mover", "gp-B86056", "gpsub-15F",
		"la-kirklees", "la-leeds", "pcsub-15F", "pcsub-X2C4Y"}
	if !slices.Equal(got, want) {
		t.Errorf("change of address: got %v\nwant %v\nfacts %+v\nenrichment %+v", got, want, f, en)
	}
	if !slices.Equal(f.SubICB, []string{"15F", "X2C4Y"}) || !slices.Equal(f.LocalAuthority, []string{"E08000035", "E08000034"}) {
		t.Errorf("change of address facts: %+v", f)
	}

	// The same patient's vaccination, published by someone else: matching
	// follows the store, not the bundle, so before delivery observes the
	// move the old address still counts; after, only the new one.
	got, _, _ = fx.match(t, "vaccinations-1", nhsMover, coa)
	if !slices.Contains(got, "la-kirklees") || slices.Contains(got, "la-leeds") {
		t.Errorf("vaccination before the move was observed: %v", got)
	}
	if err := fx.svc.Observe("pds-change-of-address-1", coa); err != nil {
		t.Fatal(err)
	}
	got, _, _ = fx.match(t, "vaccinations-1", nhsMover, coa)
	want = []string{"country-england", "country-england-reg", "england-under-10", "explicit-mover", "gp-B86056", "gpsub-15F", "la-leeds", "pcsub-15F"}
	if !slices.Equal(got, want) {
		t.Errorf("vaccination after the move: got %v\nwant %v", got, want)
	}

	// A patient known only to the store: Northumberland, aged 76.
	got, _, _ = fx.match(t, "vaccinations-1", nhsOther, nil)
	want = []string{"country-england", "country-england-reg", "gp-A84005", "gpsub-00L"}
	if !slices.Equal(got, want) {
		t.Errorf("store-only patient: got %v\nwant %v", got, want)
	}

	// Sensitive: nothing, not even the explicit subscription.
	if got, f, _ := fx.match(t, "vaccinations-1", nhsHidden, nil); len(got) != 0 || !f.Sensitive {
		t.Errorf("sensitive patient matched %v", got)
	}

	// Change of GP to none (de-registration) after Observe: unregistered.
	gpBundle := readEvent(t, "PDS-Change-Of-GP-ems-example.xml")
	removeGP(gpBundle)
	if err := fx.svc.Observe("pds-change-of-gp-1", gpBundle); err != nil {
		t.Fatal(err)
	}
	p, _, _ := fx.svc.Patients().Patient(ctx, nhsMover)
	if p.Registered == nil || *p.Registered || p.GPPractice != "" {
		t.Errorf("after de-registration the store says %+v", p)
	}
	got, _, _ = fx.match(t, "pds-change-of-gp-1", nhsMover, gpBundle)
	want = []string{"country-england", "england-under-10", "england-unreg", "explicit-mover", "la-leeds", "pcsub-15F"}
	if !slices.Equal(got, want) {
		t.Errorf("de-registered: got %v\nwant %v", got, want)
	}
	// A later event from another publisher does not re-register the
	// patient: PDS is the truth for registration.
	got, _, _ = fx.match(t, "vaccinations-1", nhsMover, coa)
	if !slices.Contains(got, "england-unreg") || slices.Contains(got, "gp-B86056") {
		t.Errorf("vaccination after de-registration: %v", got)
	}
	_ = unreg

	// Terminated postcode still maps; a Welsh one maps to Wales only.
	for pc, want := range map[string][]string{
		"ls1 1aa":  {"country-england", "country-england-reg", "gp-A84005", "gpsub-00L", "la-leeds", "pcsub-15F"},
		"CF10 1AA": {"country-wales", "gp-A84005", "gpsub-00L"},
	} {
		if err := fx.svc.Patients().Put(Patient{NHSNumber: nhsOther, GPPractice: "A84005", Registered: &reg, Postcode: pc, BirthDate: "1950-01-01"}); err != nil {
			t.Fatal(err)
		}
		got, _, en := fx.match(t, "vaccinations-1", nhsOther, nil)
		if !slices.Equal(got, want) {
			t.Errorf("%s: got %v want %v (%+v)", pc, got, want, en)
		}
		if pc == "ls1 1aa" && (len(en.Postcodes) != 1 || !en.Postcodes[0].Terminated) {
			t.Errorf("terminated flag not reported: %+v", en)
		}
		if pc == "CF10 1AA" && !slices.Contains(en.Unmapped, "sub-ICB W11000029") {
			t.Errorf("Welsh health board should be reported unmapped: %+v", en)
		}
	}
}

func removeGP(bundle *fhir.Node) {
	for _, e := range bundle.ChildrenNamed("entry") {
		if p := e.Child("resource").Resource(); p != nil && p.ResourceType == "Patient" {
			p.Children = slices.DeleteFunc(p.Children, func(c *fhir.Node) bool { return c.Name == "generalPractitioner" })
		}
	}
}

func TestBirthWithoutMotherUsesBaby(t *testing.T) {
	fx := newRulesFixture(t)
	// The fixture's baby lives in EX2 5SE, outside the test directory; give
	// it a Leeds postcode.
	b := readEvent(t, "BirthNotificationWithoutMother.xml", "EX2 5SE", "LS17 7DF")
	// The mother has no NHS number: Observe stores the baby alone.
	if err := fx.svc.Observe("pds-birth-notification-1", b); err != nil {
		t.Fatal(err)
	}
	if p, ok, _ := fx.svc.Patients().Patient(context.Background(), "5900005879"); !ok || p.Postcode != "LS177DF" || p.BirthDate != "2020-01-13" {
		t.Errorf("baby in the store: %+v %v", p, ok)
	}
	got, f, _ := fx.match(t, "pds-birth-notification-1", "", b)
	if f.BirthDate.Format("2006-01-02") != "2020-01-13" || !slices.Contains(got, "la-leeds") || slices.Contains(got, "explicit-mover") {
		t.Errorf("birth without mother: %v %+v", got, f)
	}
}

func TestNoReferenceData(t *testing.T) {
	db := openDB(t)
	svc, err := New(Options{DB: db, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	f, en, err := svc.Enrich(context.Background(), subscription.EventFacts{EventCode: "pds-change-of-address-1", NHSNumber: nhsMover},
		readEvent(t, "PDS-Change-Of-Address-ems-example.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if f.BirthDate.IsZero() || f.GPSubICB != "" || len(f.SubICB) != 0 || f.RefData != "" || en.Versions != "" {
		t.Errorf("facts without reference data: %+v %+v", f, en)
	}
}

func TestObserveDeath(t *testing.T) {
	db := openDB(t)
	svc, err := New(Options{DB: db, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	// The published example's NHS number fails Mod-11; use a valid one.
	formal := readEvent(t, "PDS-Death-Notification-formal-ems-example.xml", "6101231234", nhsMover)
	if err := svc.Observe("pds-death-notification-1", formal); err != nil {
		t.Fatal(err)
	}
	p, ok, _ := svc.Patients().Patient(context.Background(), nhsMover)
	if !ok || !p.Deceased || p.DeathDate != "2017-11-01" || p.Postcode != "LS177DF" {
		t.Errorf("after death notification: %+v", p)
	}
	removed := readEvent(t, "PDS-Death-Notification-removed-ems-example.xml", "6101231234", nhsMover)
	if err := svc.Observe("pds-death-notification-1", removed); err != nil {
		t.Fatal(err)
	}
	if p, _, _ = svc.Patients().Patient(context.Background(), nhsMover); p.Deceased || p.DeathDate != "" {
		t.Errorf("after removal: %+v", p)
	}
	// Change of address keeps the previous postcode.
	if err := svc.Observe("pds-change-of-address-1", readEvent(t, "PDS-Change-Of-Address-ems-example.xml")); err != nil {
		t.Fatal(err)
	}
	if p, _, _ = svc.Patients().Patient(context.Background(), nhsMover); p.Postcode != "LS177DF" || p.PreviousPostcode != "WF140BQ" || p.BirthDate != "2019-10-02" {
		t.Errorf("after change of address: %+v", p)
	}
}

func TestDemographicsCSV(t *testing.T) {
	db := openDB(t)
	d, err := OpenDemographics(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.batchRows = 1
	good := "nhs_number,gp_practice,postcode,birth_date,sensitive,registered\n" +
		nhsMover + ",B86056,ls17 7df,2019-10-02,,\n" +
		nhsOther + ",,CA8 7JG,1950-01-01,false,false\n" +
		nhsHidden + ",,,,true,\n"
	n, err := d.ImportCSV(context.Background(), strings.NewReader(good), "bootstrap.csv")
	if err != nil || n != 3 {
		t.Fatalf("import = %d, %v", n, err)
	}
	p, _, _ := d.Patient(context.Background(), nhsOther)
	if p.Registered == nil || *p.Registered || p.Postcode != "CA87JG" {
		t.Errorf("%+v", p)
	}
	if p, _, _ := d.Patient(context.Background(), nhsHidden); !p.Sensitive {
		t.Errorf("%+v", p)
	}
	for _, c := range []struct{ body, want string }{
		{"nhs_number,postcode\n" + nhsMover + ",WF14 0BQ\n1234567890,LS1 1AA\n", "bootstrap.csv: line 3, column 1 (nhs_number)"},
		{"nhs_number,postcode\n" + nhsMover + ",WF14 0BQ\n" + nhsOther + ",nowhere\n", "line 3, column 2 (postcode)"},
		{"nhs,postcode\n", "line 1, column 1 (nhs): unknown column"},
		{"nhs_number,gp_practice,registered\n" + nhsMover + ",B86056,false\n", "registered is false but gp_practice is set"},
	} {
		_, err := d.ImportCSV(context.Background(), strings.NewReader(c.body), "bootstrap.csv")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v; want %q", err, c.want)
		}
	}
	// The failed imports changed nothing.
	if p, _, _ := d.Patient(context.Background(), nhsMover); p.Postcode != "LS177DF" {
		t.Errorf("failed import leaked: %+v", p)
	}
}

// TestComplete: what delivery calls, on a PDS change of GP — the store is
// updated and the facts come out in one call.
func TestComplete(t *testing.T) {
	fx := newRulesFixture(t)
	gp := readEvent(t, "PDS-Change-Of-GP-ems-example.xml")
	f, err := fx.svc.Complete(context.Background(), subscription.EventFacts{EventCode: "pds-change-of-gp-1", NHSNumber: nhsMover}, gp)
	if err != nil {
		t.Fatal(err)
	}
	if f.GPPractice != "B86056" || f.GPSubICB != "15F" || f.RefData != "nspl@1,subicb@1,epraccur@1" || !slices.Equal(f.Country, []string{"E92000001"}) {
		t.Errorf("facts = %+v", f)
	}
	if p, ok, _ := fx.svc.Patients().Patient(context.Background(), nhsMover); !ok || p.GPPractice != "B86056" {
		t.Errorf("store = %+v", p)
	}
}

// TestObserveSensitive: a restricted-confidentiality label marks the
// patient sensitive, and a record change without it clears the flag.
func TestObserveSensitive(t *testing.T) {
	fx := newRulesFixture(t)
	profile := `<profile value="https://fhir.hl7.org.uk/STU3/StructureDefinition/CareConnect-Patient-1"/>`
	labelled := readEvent(t, "PDS-Change-Of-Address-ems-example.xml", profile,
		profile+`<security><system value="http://hl7.org/fhir/v3/Confidentiality"/><code value="R"/></security>`)
	if err := fx.svc.Observe("pds-change-of-address-1", labelled); err != nil {
		t.Fatal(err)
	}
	if p, _, _ := fx.svc.Patients().Patient(context.Background(), nhsMover); !p.Sensitive {
		t.Fatalf("label not recorded: %+v", p)
	}
	// Any later event for the patient, even one whose bundle has no label,
	// matches nothing while the store says sensitive.
	if got, f, _ := fx.match(t, "vaccinations-1", nhsMover, readEvent(t, "PDS-Change-Of-Address-ems-example.xml")); len(got) != 0 || !f.Sensitive {
		t.Errorf("sensitive patient matched %v", got)
	}
	if err := fx.svc.Observe("pds-record-change-1", readEvent(t, "PDS-Change-Of-Address-ems-example.xml")); err != nil {
		t.Fatal(err)
	}
	if p, _, _ := fx.svc.Patients().Patient(context.Background(), nhsMover); p.Sensitive {
		t.Errorf("record change without the label kept the flag: %+v", p)
	}
}

// TestObserveWritesOnlyChanges: an event that changes no record costs no
// write transaction.
func TestObserveWritesOnlyChanges(t *testing.T) {
	db := openDB(t)
	svc, err := New(Options{DB: db, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	coa := readEvent(t, "PDS-Change-Of-Address-ems-example.xml")
	if err := svc.Observe("pds-change-of-address-1", coa); err != nil {
		t.Fatal(err)
	}
	writes := func() int64 { st := db.Stats(); return st.TxStats.GetWrite() }
	before := writes()
	for range 3 {
		if err := svc.Observe("vaccinations-1", coa); err != nil {
			t.Fatal(err)
		}
		if err := svc.Observe("pds-change-of-address-1", coa); err != nil {
			t.Fatal(err)
		}
	}
	if after := writes(); after != before {
		t.Errorf("%d writes for events that changed nothing", after-before)
	}
	if err := svc.Observe("pds-change-of-address-1", readEvent(t, "PDS-Change-Of-Address-ems-example.xml", "LS17 7DF", "LS1 1AA")); err != nil {
		t.Fatal(err)
	}
	if writes() == before {
		t.Error("a real change was not written")
	}
	if p, _, _ := svc.Patients().Patient(context.Background(), nhsMover); p.Postcode != "LS11AA" {
		t.Errorf("%+v", p)
	}
}
