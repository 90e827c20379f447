package subscription

import (
	"strings"
	"testing"

	"github.com/ems-broker/ems/fhir"
)

const (
	nhsA = "9912003888" // valid Mod-11
	nhsB = "9434765919" // valid Mod-11 (subscriptions.md example)
	base = "/Bundle?type=message"
)

func TestParseCriteriaValid(t *testing.T) {
	cases := []struct {
		name, in string
		want     Criteria
	}{
		{"issue vector explicit UHV with ages", base + "&serviceType=UHV&Patient.identifier=https://fhir.nhs.uk/Id/nhs-number|" + nhsA + "&MessageHeader.event=pds-change-of-gp-1&Patient.age=gt1&Patient.age=lt19",
			Criteria{Kind: Explicit, ServiceType: "UHV", NHSNumber: nhsA, Events: []string{"pds-change-of-gp-1"}, HasAgeGT: true, AgeGT: 1, HasAgeLT: true, AgeLT: 19}},
		{"issue vector generic CHO_POSTCODE_CCG with tag", base + "&MessageHeader.event=pds-change-of-address-1&subscriptionRuleType=CHO_POSTCODE_CCG&Organization.identifier=X2458&tag=team-a_1",
			Criteria{Kind: Generic, Events: []string{"pds-change-of-address-1"}, Rule: RulePostcodeSubICB, Organisation: "X2458", Tag: "team-a_1"}},
		{"spec create example retired system", base + "&Patient.identifier=http://fhir.nhs.net/Id/nhs-number|" + nhsB + "&MessageHeader.event=pds-change-of-address-1",
			Criteria{Kind: Explicit, NHSNumber: nhsB, Events: []string{"pds-change-of-address-1"}}},
		{"bare NHS number", base + "&Patient.identifier=" + nhsB + "&MessageHeader.event=pds-death-notification-1",
			Criteria{Kind: Explicit, NHSNumber: nhsB, Events: []string{"pds-death-notification-1"}}},
		{"clients.md typical generic", base + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=COUNTRYCODE&Organization.identifier=E92000001",
			Criteria{Kind: Generic, Events: []string{"pds-change-of-gp-1"}, Rule: RuleCountry, Organisation: "E92000001"}},
		{"no leading slash", "Bundle?type=message&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1",
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"vaccinations-1"}}},
		{"explicit several events sorted", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1&MessageHeader.event=pds-birth-notification-1&MessageHeader.event=newborn-hearing-1",
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"newborn-hearing-1", "pds-birth-notification-1", "vaccinations-1"}}},
		{"component order free", "/Bundle?MessageHeader.event=vaccinations-1&Patient.identifier=" + nhsA + "&type=message",
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"vaccinations-1"}}},
		{"URL-encoded pipe and colon", base + "&Patient.identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C" + nhsA + "&MessageHeader.event=vaccinations-1",
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"vaccinations-1"}}},
		{"URL-encoded key", base + "&Patient%2Eidentifier=" + nhsA + "&MessageHeader.event=vaccinations-1",
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"vaccinations-1"}}},
		{"GP_GP_GP", base + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=GP_GP_GP&Organization.identifier=A81001",
			Criteria{Kind: Generic, Events: []string{"pds-change-of-gp-1"}, Rule: RuleGPPractice, Organisation: "A81001"}},
		{"CHO_GP_CCG with RegisteredOnly", base + "&MessageHeader.event=pds-birth-notification-1&subscriptionRuleType=CHO_GP_CCG&Organization.identifier=00L&GPRegistration=RegisteredOnly",
			Criteria{Kind: Generic, Events: []string{"pds-birth-notification-1"}, Rule: RuleGPSubICB, Organisation: "00L", Registration: RegisteredOnly}},
		{"UHV_POSTCODE_LACODE unregistered", base + "&serviceType=UHV&MessageHeader.event=pds-change-of-address-1&subscriptionRuleType=UHV_POSTCODE_LACODE&Organization.identifier=E06000001&GPRegistration=UnregisteredOnly",
			Criteria{Kind: Generic, ServiceType: "UHV", Events: []string{"pds-change-of-address-1"}, Rule: RulePostcodeLA, Organisation: "E06000001", Registration: UnregisteredOnly}},
		{"COUNTRYCODE Wales", base + "&MessageHeader.event=pds-death-notification-1&subscriptionRuleType=COUNTRYCODE&Organization.identifier=W92000004",
			Criteria{Kind: Generic, Events: []string{"pds-death-notification-1"}, Rule: RuleCountry, Organisation: "W92000004"}},
		{"COUNTRYCODE Isle of Man", base + "&MessageHeader.event=pds-death-notification-1&subscriptionRuleType=COUNTRYCODE&Organization.identifier=M83000003",
			Criteria{Kind: Generic, Events: []string{"pds-death-notification-1"}, Rule: RuleCountry, Organisation: "M83000003"}},
		{"age gt only", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1&Patient.age=gt5",
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"vaccinations-1"}, HasAgeGT: true, AgeGT: 5}},
		{"age lt only", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1&Patient.age=lt1",
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"vaccinations-1"}, HasAgeLT: true, AgeLT: 1}},
		{"age gt0", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1&Patient.age=gt0",
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"vaccinations-1"}, HasAgeGT: true}},
		{"age lt then gt order", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1&Patient.age=lt19&Patient.age=gt5",
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"vaccinations-1"}, HasAgeGT: true, AgeGT: 5, HasAgeLT: true, AgeLT: 19}},
		{"age range of exactly one year", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1&Patient.age=gt4&Patient.age=lt6",
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"vaccinations-1"}, HasAgeGT: true, AgeGT: 4, HasAgeLT: true, AgeLT: 6}},
		{"age 150", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1&Patient.age=lt150",
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"vaccinations-1"}, HasAgeLT: true, AgeLT: 150}},
		{"tag max 100", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1&tag=" + strings.Repeat("a", 100),
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"vaccinations-1"}, Tag: strings.Repeat("a", 100)}},
		{"tag with pipe and comma", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1&tag=a|b,c",
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"vaccinations-1"}, Tag: "a|b,c"}},
		{"tag percent-encoded pipe", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1&tag=a%7Cb",
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"vaccinations-1"}, Tag: "a|b"}},
		{"serviceType EPCHR", base + "&serviceType=EPCHR&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1",
			Criteria{Kind: Explicit, ServiceType: "EPCHR", NHSNumber: nhsA, Events: []string{"vaccinations-1"}}},
		{"serviceType GP", base + "&serviceType=GP&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1",
			Criteria{Kind: Explicit, ServiceType: "GP", NHSNumber: nhsA, Events: []string{"vaccinations-1"}}},
		{"explicit GPRegistration", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1&GPRegistration=UnregisteredOnly",
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"vaccinations-1"}, Registration: UnregisteredOnly}},
		{"unknown-looking but well-formed event code", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=pds-person-death-1",
			Criteria{Kind: Explicit, NHSNumber: nhsA, Events: []string{"pds-person-death-1"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCriteria(tc.in)
			if err != nil {
				t.Fatalf("ParseCriteria(%q): %v", tc.in, err)
			}
			if got.Normalised() != tc.want.Normalised() || got.Kind != tc.want.Kind {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
			// The normalised form is itself valid criteria with the same meaning.
			again, err := ParseCriteria(got.Normalised())
			if err != nil || again.Normalised() != got.Normalised() {
				t.Fatalf("normalised form %q does not round-trip: %v", got.Normalised(), err)
			}
		})
	}
}

func TestParseCriteriaErrors(t *testing.T) {
	exp := base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1"
	gen := base + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=GP_GP_GP&Organization.identifier=A81001"
	cases := []struct {
		name, in  string
		code      fhir.SpineCode
		component string
	}{
		{"issue vector: identifier with rule type", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=GP_GP_GP&Organization.identifier=A81001", fhir.InvalidParameter, compRule},
		{"issue vector: identifier with rule type, no org", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=GP_GP_GP", fhir.InvalidParameter, compRule},
		{"issue vector: two GPRegistration", exp + "&GPRegistration=RegisteredOnly&GPRegistration=UnregisteredOnly", fhir.InvalidParameter, compRegistration},
		{"two identical GPRegistration", exp + "&GPRegistration=RegisteredOnly&GPRegistration=RegisteredOnly", fhir.InvalidParameter, compRegistration},
		{"issue vector: tag with a space (encoded)", exp + "&tag=team%20a", fhir.InvalidParameter, compTag},
		{"issue vector: tag with a space (raw)", exp + "&tag=team a", fhir.InvalidParameter, compTag},
		{"tag with plus", exp + "&tag=team+a", fhir.InvalidParameter, compTag},
		{"issue vector: 101-char tag", exp + "&tag=" + strings.Repeat("x", 101), fhir.InvalidParameter, compTag},
		{"tag with dot", exp + "&tag=a.b", fhir.InvalidParameter, compTag},
		{"tag non-ASCII", exp + "&tag=caf%C3%A9", fhir.InvalidParameter, compTag},
		{"empty tag", exp + "&tag=", fhir.InvalidParameter, compTag},
		{"two tags", exp + "&tag=a&tag=b", fhir.InvalidParameter, compTag},
		{"empty string", "", fhir.InvalidParameter, ""},
		{"no query", "/Bundle", fhir.InvalidParameter, ""},
		{"wrong resource", "/Patient?type=message&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1", fhir.InvalidParameter, ""},
		{"2018 MessageHeader?event form", "Bundle?type=message&MessageHeader?event=vaccinations-1", fhir.InvalidParameter, "MessageHeader?event"},
		{"only prefix", base, fhir.InvalidParameter, ""},
		{"no type", "/Bundle?Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1", fhir.InvalidParameter, compType},
		{"type not message", "/Bundle?type=document&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1", fhir.InvalidParameter, compType},
		{"type twice", exp + "&type=message", fhir.InvalidParameter, compType},
		{"empty component", base + "&&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1", fhir.InvalidParameter, ""},
		{"trailing ampersand", exp + "&", fhir.InvalidParameter, ""},
		{"component without value", exp + "&serviceType", fhir.InvalidParameter, compServiceType},
		{"component with empty value", exp + "&serviceType=", fhir.InvalidParameter, compServiceType},
		{"bad percent-encoding", exp + "&tag=%zz", fhir.InvalidParameter, compTag},
		{"unknown component", exp + "&Patient.birthDate=2010", fhir.InvalidParameter, "Patient.birthDate"},
		{"case-sensitive key", base + "&patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1", fhir.InvalidParameter, "patient.identifier"},
		{"unknown serviceType", exp + "&serviceType=HV", fhir.InvalidParameter, compServiceType},
		{"lower-case serviceType", exp + "&serviceType=gp", fhir.InvalidParameter, compServiceType},
		{"two serviceTypes", exp + "&serviceType=GP&serviceType=CHO", fhir.InvalidParameter, compServiceType},
		{"NHS number bad check digit", base + "&Patient.identifier=9912003889&MessageHeader.event=vaccinations-1", fhir.InvalidNHSNumber, compPatient},
		{"NHS number 9 digits", base + "&Patient.identifier=991200388&MessageHeader.event=vaccinations-1", fhir.InvalidNHSNumber, compPatient},
		{"NHS number with spaces", base + "&Patient.identifier=991%20200%203888&MessageHeader.event=vaccinations-1", fhir.InvalidNHSNumber, compPatient},
		{"NHS number never-valid remainder 10", base + "&Patient.identifier=0000000060&MessageHeader.event=vaccinations-1", fhir.InvalidNHSNumber, compPatient},
		{"wrong identifier system", base + "&Patient.identifier=https://example.org/mrn|" + nhsA + "&MessageHeader.event=vaccinations-1", fhir.InvalidIdentifierSystem, compPatient},
		{"empty identifier system", base + "&Patient.identifier=|" + nhsA + "&MessageHeader.event=vaccinations-1", fhir.InvalidIdentifierSystem, compPatient},
		{"two Patient.identifier", exp + "&Patient.identifier=" + nhsB, fhir.InvalidParameter, compPatient},
		{"explicit without event", base + "&Patient.identifier=" + nhsA, fhir.InvalidParameter, compEvent},
		{"event code with system", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=https://fhir.nhs.uk/STU3/CodeSystem/EventType-1|vaccinations-1", fhir.InvalidCodeValue, compEvent},
		{"event code upper case", base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=VACCINATIONS-1", fhir.InvalidCodeValue, compEvent},
		{"event listed twice", exp + "&MessageHeader.event=vaccinations-1", fhir.InvalidParameter, compEvent},
		{"explicit with Organization.identifier", exp + "&Organization.identifier=A81001", fhir.InvalidParameter, compOrganisation},
		{"generic with two events", gen + "&MessageHeader.event=pds-change-of-address-1", fhir.InvalidParameter, compEvent},
		{"generic without event", base + "&subscriptionRuleType=GP_GP_GP&Organization.identifier=A81001", fhir.InvalidParameter, compEvent},
		{"generic without organisation", base + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=GP_GP_GP", fhir.InvalidParameter, compOrganisation},
		{"organisation without rule (read example)", base + "&MessageHeader.event=pds-change-of-gp-1&Organization.identifier=A81001", fhir.InvalidParameter, compRule},
		{"neither explicit nor generic", base + "&MessageHeader.event=pds-change-of-gp-1", fhir.InvalidParameter, ""},
		{"unknown rule type", base + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=GP_POSTCODE&Organization.identifier=A81001", fhir.InvalidCodeValue, compRule},
		{"legacy HSS rule", base + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=HSS&Organization.identifier=E92000001", fhir.InvalidCodeValue, compRule},
		{"lower-case rule type", base + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=gp_gp_gp&Organization.identifier=A81001", fhir.InvalidCodeValue, compRule},
		{"two rule types", gen + "&subscriptionRuleType=COUNTRYCODE", fhir.InvalidParameter, compRule},
		{"two organisations", gen + "&Organization.identifier=A81002", fhir.InvalidParameter, compOrganisation},
		{"organisation lower case", base + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=GP_GP_GP&Organization.identifier=a81001", fhir.InvalidParameter, compOrganisation},
		{"organisation too short", base + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=GP_GP_GP&Organization.identifier=A8", fhir.InvalidParameter, compOrganisation},
		{"organisation with system", base + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=GP_GP_GP&Organization.identifier=https://fhir.nhs.uk/Id/ods-organization-code|A81001", fhir.InvalidParameter, compOrganisation},
		{"COUNTRYCODE not a country", base + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=COUNTRYCODE&Organization.identifier=E06000001", fhir.InvalidParameter, compOrganisation},
		{"UnregisteredOnly with GP_GP_GP", gen + "&GPRegistration=UnregisteredOnly", fhir.InvalidParameter, compRegistration},
		{"UnregisteredOnly with CHO_GP_CCG", base + "&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=CHO_GP_CCG&Organization.identifier=00L&GPRegistration=UnregisteredOnly", fhir.InvalidParameter, compRegistration},
		{"GPRegistration bad value", exp + "&GPRegistration=Registered", fhir.InvalidParameter, compRegistration},
		{"age without comparator", exp + "&Patient.age=5", fhir.InvalidParameter, compAge},
		{"age comparator le", exp + "&Patient.age=le5", fhir.InvalidParameter, compAge},
		{"age comparator eq", exp + "&Patient.age=eq5", fhir.InvalidParameter, compAge},
		{"age upper-case comparator", exp + "&Patient.age=LT5", fhir.InvalidParameter, compAge},
		{"age no number", exp + "&Patient.age=lt", fhir.InvalidParameter, compAge},
		{"age negative", exp + "&Patient.age=lt-1", fhir.InvalidParameter, compAge},
		{"age decimal", exp + "&Patient.age=lt5.5", fhir.InvalidParameter, compAge},
		{"age too large", exp + "&Patient.age=lt151", fhir.InvalidParameter, compAge},
		{"age too many digits", exp + "&Patient.age=gt0001", fhir.InvalidParameter, compAge},
		{"age lt twice", exp + "&Patient.age=lt5&Patient.age=lt6", fhir.InvalidParameter, compAge},
		{"age gt twice", exp + "&Patient.age=gt5&Patient.age=gt6", fhir.InvalidParameter, compAge},
		{"age three occurrences", exp + "&Patient.age=gt1&Patient.age=lt19&Patient.age=gt2", fhir.InvalidParameter, compAge},
		{"age lt0", exp + "&Patient.age=lt0", fhir.InvalidParameter, compAge},
		{"age empty range", exp + "&Patient.age=gt5&Patient.age=lt6", fhir.InvalidParameter, compAge},
		{"age inverted range", exp + "&Patient.age=gt19&Patient.age=lt5", fhir.InvalidParameter, compAge},
	}
	if len(cases) < 60 {
		t.Fatalf("only %d error cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCriteria(tc.in)
			if err == nil {
				t.Fatalf("ParseCriteria(%q) accepted", tc.in)
			}
			if err.Code != tc.code || err.Component != tc.component {
				t.Fatalf("got %s on %q (%s), want %s on %q", err.Code, err.Component, err.Message, tc.code, tc.component)
			}
			if err.Message == "" {
				t.Fatal("empty diagnostics")
			}
		})
	}
}

func TestNormalisedEquatesSpellings(t *testing.T) {
	a, err := ParseCriteria(base + "&Patient.identifier=http://fhir.nhs.net/Id/nhs-number|" + nhsA + "&MessageHeader.event=vaccinations-1&MessageHeader.event=pds-change-of-gp-1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseCriteria("Bundle?MessageHeader.event=pds-change-of-gp-1&type=message&MessageHeader.event=vaccinations-1&Patient.identifier=" + nhsA)
	if err != nil {
		t.Fatal(err)
	}
	if a.Normalised() != b.Normalised() {
		t.Fatalf("%q != %q", a.Normalised(), b.Normalised())
	}
	c, _ := ParseCriteria(base + "&Patient.identifier=" + nhsA + "&MessageHeader.event=vaccinations-1&MessageHeader.event=pds-change-of-gp-1&tag=x")
	if c.Normalised() == a.Normalised() {
		t.Fatal("a tag must make criteria distinct")
	}
}

func FuzzParseCriteria(f *testing.F) {
	for _, s := range []string{
		base + "&serviceType=UHV&Patient.identifier=https://fhir.nhs.uk/Id/nhs-number|" + nhsA + "&MessageHeader.event=pds-change-of-gp-1&Patient.age=gt1&Patient.age=lt19",
		base + "&MessageHeader.event=pds-change-of-address-1&subscriptionRuleType=CHO_POSTCODE_CCG&Organization.identifier=X2458&tag=a|b",
		base + "&Patient.identifier=%7C&tag=%zz",
		"Bundle?type=message&&",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCriteria(s)
		if err != nil {
			if err.Code == "" || err.Message == "" {
				t.Fatalf("error without code or message: %+v", err)
			}
			return
		}
		if c.Kind != Explicit && c.Kind != Generic {
			t.Fatalf("accepted criteria without a kind: %q", s)
		}
		if len(c.Events) == 0 {
			t.Fatalf("accepted criteria without events: %q", s)
		}
		if len(c.Tag) > maxTagLen {
			t.Fatalf("accepted a %d-char tag", len(c.Tag))
		}
		if c.Kind == Explicit && !fhir.ValidNHSNumber(c.NHSNumber) {
			t.Fatalf("accepted invalid NHS number %q", c.NHSNumber)
		}
		n := c.Normalised()
		again, err := ParseCriteria(n)
		if err != nil {
			t.Fatalf("normalised %q of accepted %q rejected: %v", n, s, err)
		}
		if again.Normalised() != n {
			t.Fatalf("normalisation not idempotent: %q -> %q", n, again.Normalised())
		}
	})
}
