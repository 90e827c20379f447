package subscription

import (
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/ems-broker/ems/fhir/catalog"
)

func TestMatcher(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	s, db := openTestStore(t, filepath.Join(t.TempDir(), "m.db"), func() time.Time { return now })
	defer db.Close()
	nhsC := validNHS(7)
	subs := map[string]Subscription{
		"explicit-gp":      testSub(t, "RR8", "MBX1", base+"&Patient.identifier="+nhsA+"&MessageHeader.event=pds-change-of-gp-1&MessageHeader.event=vaccinations-1&tag=ward-7", StatusActive),
		"explicit-age":     testSub(t, "RR8", "MBX1", base+"&serviceType=UHV&Patient.identifier=https://fhir.nhs.uk/Id/nhs-number|"+nhsA+"&MessageHeader.event=pds-change-of-gp-1&Patient.age=gt1&Patient.age=lt19", StatusActive),
		"explicit-other":   testSub(t, "RR8", "MBX1", base+"&Patient.identifier="+nhsC+"&MessageHeader.event=pds-change-of-gp-1", StatusActive),
		"explicit-pending": testSub(t, "RR8", "MBX1", base+"&Patient.identifier="+nhsA+"&MessageHeader.event=pds-change-of-gp-1&tag=p", StatusRequested),
		"explicit-ended":   testSub(t, "RR8", "MBX1", base+"&Patient.identifier="+nhsA+"&MessageHeader.event=pds-change-of-gp-1&tag=e", StatusActive),
		"gp":               testSub(t, "A81001", "MBX2", base+"&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=GP_GP_GP&Organization.identifier=A81001", StatusActive),
		"gp-subicb":        testSub(t, "X26", "MBX3", base+"&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=CHO_GP_CCG&Organization.identifier=00L", StatusActive),
		"postcode-subicb":  testSub(t, "X26", "MBX3", base+"&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=CHO_POSTCODE_CCG&Organization.identifier=X2458&tag=cho", StatusActive),
		"la-unregistered":  testSub(t, "X26", "MBX4", base+"&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=UHV_POSTCODE_LACODE&Organization.identifier=E06000001&GPRegistration=UnregisteredOnly", StatusActive),
		"country-wales":    testSub(t, "X26", "MBX5", base+"&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=COUNTRYCODE&Organization.identifier=W92000004", StatusActive),
		"country-england":  testSub(t, "X26", "MBX5", base+"&MessageHeader.event=pds-change-of-address-1&subscriptionRuleType=COUNTRYCODE&Organization.identifier=E92000001", StatusActive),
	}
	ended := subs["explicit-ended"]
	ended.End = now.Add(-time.Minute)
	subs["explicit-ended"] = ended
	ids := map[string]string{} // store id → name
	for name, sub := range subs {
		got, err := s.Create(sub, "t", CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids[got.ID] = name
	}
	m := NewMatcher(MatcherOptions{Index: s, Catalog: catalog.Default(), Now: func() time.Time { return now }})
	yes, no := true, false
	born := func(y, mo, d int) time.Time { return time.Date(y, time.Month(mo), d, 0, 0, 0, 0, time.UTC) }
	cases := []struct {
		name  string
		facts EventFacts
		want  []string
	}{
		{"explicit only", EventFacts{EventCode: "pds-change-of-gp-1", NHSNumber: nhsA}, []string{"explicit-gp"}},
		{"explicit with age in range", EventFacts{EventCode: "pds-change-of-gp-1", NHSNumber: nhsA, BirthDate: born(2020, 1, 1)}, []string{"explicit-age", "explicit-gp"}},
		{"age exactly 19 excluded (exclusive)", EventFacts{EventCode: "pds-change-of-gp-1", NHSNumber: nhsA, BirthDate: born(2007, 6, 1)}, []string{"explicit-gp"}},
		{"age 18 the day before the 19th birthday", EventFacts{EventCode: "pds-change-of-gp-1", NHSNumber: nhsA, BirthDate: born(2007, 6, 2)}, []string{"explicit-age", "explicit-gp"}},
		{"age 1 excluded by gt1", EventFacts{EventCode: "pds-change-of-gp-1", NHSNumber: nhsA, BirthDate: born(2025, 1, 1)}, []string{"explicit-gp"}},
		{"event date decides age", EventFacts{EventCode: "pds-change-of-gp-1", NHSNumber: nhsA, BirthDate: born(2007, 6, 1), EventDate: born(2026, 5, 31)}, []string{"explicit-age", "explicit-gp"}},
		{"other event code", EventFacts{EventCode: "vaccinations-1", NHSNumber: nhsA}, []string{"explicit-gp"}},
		{"unsubscribed event", EventFacts{EventCode: "newborn-hearing-1", NHSNumber: nhsA}, nil},
		{"withdrawn or unknown event", EventFacts{EventCode: "no-such-event-1", NHSNumber: nhsA}, nil},
		{"sensitive patient", EventFacts{EventCode: "pds-change-of-gp-1", NHSNumber: nhsA, Sensitive: true, GPPractice: "A81001"}, nil},
		{"generic GP and sub-ICB", EventFacts{EventCode: "pds-change-of-gp-1", NHSNumber: validNHS(99), GPPractice: "A81001", GPSubICB: "00L", Registered: &yes}, []string{"gp", "gp-subicb"}},
		{"postcode rules, unregistered", EventFacts{EventCode: "pds-change-of-gp-1", SubICB: []string{"X2458"}, LocalAuthority: []string{"E06000001"}, Country: []string{"W92000004"}, Registered: &no}, []string{"country-wales", "la-unregistered", "postcode-subicb"}},
		{"UnregisteredOnly needs known registration", EventFacts{EventCode: "pds-change-of-gp-1", LocalAuthority: []string{"E06000001"}}, nil},
		{"registered patient excluded by UnregisteredOnly", EventFacts{EventCode: "pds-change-of-gp-1", LocalAuthority: []string{"E06000001"}, Registered: &yes}, nil},
		{"change of address: previous address matches", EventFacts{EventCode: "pds-change-of-address-1", NHSNumber: nhsA, Country: []string{"W92000004", "E92000001"}}, []string{"country-england"}},
		{"same org twice is one match", EventFacts{EventCode: "pds-change-of-address-1", Country: []string{"E92000001", "E92000001"}}, []string{"country-england"}},
		{"explicit and generic together", EventFacts{EventCode: "pds-change-of-gp-1", NHSNumber: nhsC, GPPractice: "A81001"}, []string{"explicit-other", "gp"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.Match(tc.facts)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, g := range got {
				names = append(names, ids[g.SubscriptionID])
			}
			sort.Strings(names)
			if !reflect.DeepEqual(names, tc.want) {
				t.Fatalf("matched %v, want %v", names, tc.want)
			}
		})
	}
	// Why it matched: kind, rule, organisation, tag and channel.
	got, _ := m.Match(EventFacts{EventCode: "pds-change-of-gp-1", SubICB: []string{"X2458"}})
	if len(got) != 1 || got[0].Kind != Generic || got[0].RuleType != RulePostcodeSubICB || got[0].OrganisationCode != "X2458" || got[0].Tag != "cho" || got[0].Endpoint != "MBX3" || got[0].ChannelType != ChannelMessage || got[0].Owner != "X26" {
		t.Fatalf("match detail %+v", got)
	}
	got, _ = m.Match(EventFacts{EventCode: "vaccinations-1", NHSNumber: nhsA})
	if len(got) != 1 || got[0].Kind != Explicit || got[0].Tag != "ward-7" || got[0].RuleType != "" {
		t.Fatalf("explicit match detail %+v", got)
	}
}

func TestMatchEntryRoundTrip(t *testing.T) {
	e := MatchEntry{Kind: Generic, Rule: RuleCountry, Organisation: "E92000001", HasAgeLT: true, AgeLT: 19, HasAgeGT: true, AgeGT: 150,
		Registration: UnregisteredOnly, End: time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC), Tag: "a|b", Owner: "RR8", ChannelType: ChannelRestHook, Endpoint: "https://x.example/hook", Payload: "application/fhir+xml"}
	got, err := decodeMatchEntry(encodeMatchEntry(e))
	if err != nil || got != e {
		t.Fatalf("%+v %v", got, err)
	}
	enc := encodeMatchEntry(e)
	for i := 0; i < len(enc); i++ {
		decodeMatchEntry(enc[:i]) // must not panic on truncation
	}
}
