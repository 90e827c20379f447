package catalog

import (
	"encoding/xml"
	"os"
	"strings"
	"testing"
	"time"
)

// codeSystem is the part of a FHIR STU3 CodeSystem (XML) the tests read.
type codeSystem struct {
	URL     valueAttr `xml:"url"`
	Concept []struct {
		Code    valueAttr `xml:"code"`
		Display valueAttr `xml:"display"`
	} `xml:"concept"`
}

type valueAttr struct {
	Value string `xml:"value,attr"`
}

func loadEventTypeCodeSystem(t *testing.T) codeSystem {
	t.Helper()
	data, err := os.ReadFile("testdata/CodeSystem-EventType-1.xml")
	if err != nil {
		t.Fatal(err)
	}
	var cs codeSystem
	if err := xml.Unmarshal(data, &cs); err != nil {
		t.Fatalf("parsing CodeSystem-EventType-1.xml: %v", err)
	}
	if len(cs.Concept) == 0 {
		t.Fatal("CodeSystem-EventType-1.xml: no concepts parsed")
	}
	return cs
}

// TestCatalogMatchesCodeSystem checks the catalogue against the published
// CodeSystem in both directions: a code missing from the table would be
// rejected as unknown, and a code in the table but not in the CodeSystem
// would be accepted although no receiver can interpret it.
func TestCatalogMatchesCodeSystem(t *testing.T) {
	cs := loadEventTypeCodeSystem(t)
	if cs.URL.Value != EventTypeSystem {
		t.Errorf("CodeSystem url = %q, want %q", cs.URL.Value, EventTypeSystem)
	}
	c := Default()
	seen := map[string]bool{}
	for _, concept := range cs.Concept {
		code, display := concept.Code.Value, concept.Display.Value
		if seen[code] {
			t.Errorf("code %q twice in the CodeSystem", code)
		}
		seen[code] = true
		e, ok := c.Lookup(code)
		if !ok {
			t.Errorf("code %q (%s) is not in the catalogue", code, display)
			continue
		}
		if e.Display != display {
			t.Errorf("%s: display %q, CodeSystem says %q", code, e.Display, display)
		}
	}
	for _, e := range c.All() {
		if !seen[e.Code] {
			t.Errorf("catalogue code %q is not in the CodeSystem", e.Code)
		}
	}
	if got, want := len(c.All()), 54; got != want {
		t.Errorf("catalogue has %d events, want %d", got, want)
	}
	if len(defaultEvents) != len(c.All()) {
		t.Errorf("defaultEvents has %d entries but %d distinct codes", len(defaultEvents), len(c.All()))
	}
}

var supportedCodes = []string{
	"blood-spot-test-outcome-1",
	"newborn-hearing-1",
	"nipe-outcome-1",
	"pds-birth-notification-1",
	"pds-change-of-address-1",
	"pds-change-of-gp-1",
	"pds-death-notification-1",
	"pds-record-change-1",
	"professional-contacts-1",
	"vaccinations-1",
}

func TestOnlySupportedEnabled(t *testing.T) {
	supported := map[string]bool{}
	for _, code := range supportedCodes {
		supported[code] = true
	}
	for _, e := range Default().All() {
		if e.Enabled != supported[e.Code] {
			t.Errorf("%s: Enabled = %v, want %v", e.Code, e.Enabled, supported[e.Code])
		}
		if (e.Tier == Supported) != supported[e.Code] {
			t.Errorf("%s: Tier = %q", e.Code, e.Tier)
		}
		if e.State != Active {
			t.Errorf("%s: State = %q, want active", e.Code, e.State)
		}
	}
}

// TestTiers pins the classification of events.md §4 and §5.
func TestTiers(t *testing.T) {
	count := map[Tier]int{}
	for _, e := range Default().All() {
		count[e.Tier]++
	}
	want := map[Tier]int{Supported: 10, Draft: 13, Legacy: 2, DCH: 29}
	for tier, n := range want {
		if count[tier] != n {
			t.Errorf("tier %s: %d events, want %d", tier, count[tier], n)
		}
	}
	for code, tier := range map[string]Tier{
		"failsafe-message-gp-1":                        Draft,
		"failsafe-message-response-newborn-hearing-1":  Draft,
		"allergies-and-adverse-reactions-1":            Draft,
		"observations-1":                               Draft,
		"legal-information-1":                          Draft,
		"national-population-failsafe-alert-1":         Legacy,
		"national-population-failsafe-alert-nullify-1": Legacy,
		"referral-1":                                   DCH,
		"vaccinations-1":                               Supported,
	} {
		e, _ := Default().Lookup(code)
		if e.Tier != tier {
			t.Errorf("%s: Tier = %q, want %q", code, e.Tier, tier)
		}
	}
}

// derivedPublishCode and derivedWorkflowID are the rule that produced the
// values of the live NEMS events; the table uses it for events where NHS
// never published a value.
func derivedPublishCode(code string) string {
	base := strings.ReplaceAll(strings.TrimSuffix(code, "-1"), "-", "")
	return strings.ToUpper(base[:1]) + base[1:]
}

func derivedWorkflowID(code string) string {
	return strings.ToUpper(strings.ReplaceAll(strings.TrimSuffix(code, "-1"), "-", "")) + "_1"
}

func TestEventInvariants(t *testing.T) {
	// WorkflowIDs given by the specification that do not follow the rule.
	specWorkflowID := map[string]string{
		"pds-birth-notification-1":          "BIRTHNOTIFICATION_1",
		"pds-change-of-address-1":           "CHANGEOFADDRESS_1",
		"pds-change-of-gp-1":                "CHANGEOFGP_1",
		"pds-death-notification-1":          "DEATHNOTIFICATION_1",
		"allergies-and-adverse-reactions-1": "ALLERGIES_ADVERSE_REACTIONS_1",
		"legal-information-1":               "LEGAL_INFORMATION_1",
	}
	workflowIDs := map[string]string{}
	for _, e := range Default().All() {
		if !strings.HasSuffix(e.Code, "-1") {
			t.Errorf("%s: code without version suffix", e.Code)
		}
		if e.Display == "" || e.Focus == "" || e.WorkflowID == "" {
			t.Errorf("%s: empty Display, Focus or WorkflowID: %+v", e.Code, e)
		}
		if prev, dup := workflowIDs[e.WorkflowID]; dup {
			t.Errorf("%s and %s share WorkflowID %s", prev, e.Code, e.WorkflowID)
		}
		workflowIDs[e.WorkflowID] = e.Code
		want, ok := specWorkflowID[e.Code]
		if !ok {
			want = derivedWorkflowID(e.Code)
		}
		if e.WorkflowID != want {
			t.Errorf("%s: WorkflowID %q, want %q", e.Code, e.WorkflowID, want)
		}
		if e.Publishable != (e.PublishCode != "") {
			t.Errorf("%s: Publishable = %v but PublishCode = %q", e.Code, e.Publishable, e.PublishCode)
		}
		if e.PublishCode != "" && e.PublishCode != derivedPublishCode(e.Code) {
			t.Errorf("%s: PublishCode %q, want %q", e.Code, e.PublishCode, derivedPublishCode(e.Code))
		}
		if !e.Subscribable {
			t.Errorf("%s: not subscribable", e.Code)
		}
		if len(e.MessageEventTypes) == 0 || !e.AllowsMessageEventType("new") {
			t.Errorf("%s: MessageEventTypes %v lack \"new\"", e.Code, e.MessageEventTypes)
		}
		for _, m := range e.MessageEventTypes {
			if m != "new" && m != "update" && m != "delete" {
				t.Errorf("%s: messageEventType %q is not in MessageEventType-1", e.Code, m)
			}
		}
		if e.Tier == DCH && (e.Focus != "Encounter" || !e.Publishable || len(e.MessageEventTypes) != 3) {
			t.Errorf("%s: DCH event must be publishable new/update/delete with Encounter focus: %+v", e.Code, e)
		}
	}
}

func TestAllowsMessageEventType(t *testing.T) {
	c := Default()
	tests := []struct {
		code, met string
		want      bool
	}{
		{"vaccinations-1", "update", true},
		{"blood-spot-test-outcome-1", "update", false},
		{"blood-spot-test-outcome-1", "delete", true},
		{"pds-change-of-gp-1", "delete", false},
		{"failsafe-message-gp-1", "update", false},
		{"failsafe-message-response-gp-1", "update", true},
		{"vaccinations-1", "New", false},
	}
	for _, tt := range tests {
		e, ok := c.Lookup(tt.code)
		if !ok {
			t.Fatalf("%s missing", tt.code)
		}
		if got := e.AllowsMessageEventType(tt.met); got != tt.want {
			t.Errorf("%s.AllowsMessageEventType(%q) = %v, want %v", tt.code, tt.met, got, tt.want)
		}
	}
}

func boolPtr(b bool) *bool { return &b }

func TestApply(t *testing.T) {
	date := time.Date(2027, 3, 31, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		overrides map[string]Override
		wantErr   string // substring; empty = success
		check     func(t *testing.T, c *Catalog)
	}{
		{
			name:      "enable a draft",
			overrides: map[string]Override{"observations-1": {Enabled: boolPtr(true)}},
			check: func(t *testing.T, c *Catalog) {
				if e, _ := c.Lookup("observations-1"); !e.Enabled {
					t.Error("observations-1 not enabled")
				}
			},
		},
		{
			name:      "disable a supported event",
			overrides: map[string]Override{"vaccinations-1": {Enabled: boolPtr(false)}},
			check: func(t *testing.T, c *Catalog) {
				if e, _ := c.Lookup("vaccinations-1"); e.Enabled {
					t.Error("vaccinations-1 still enabled")
				}
			},
		},
		{
			name: "deprecate keeps enabled",
			overrides: map[string]Override{"pds-change-of-address-1": {
				State: Deprecated, DeprecationDate: date, InfoURL: "https://example.org/x",
			}},
			check: func(t *testing.T, c *Catalog) {
				e, _ := c.Lookup("pds-change-of-address-1")
				if e.State != Deprecated || !e.DeprecationDate.Equal(date) || e.InfoURL != "https://example.org/x" || !e.Enabled {
					t.Errorf("got %+v", e)
				}
			},
		},
		{
			name:      "one bad code fails the whole set",
			overrides: map[string]Override{"referral-1": {State: NoLongerSupported}, "referral-1x": {}},
			wantErr:   `event "referral-1x": not an EventType-1 code`,
		},
		{
			name:      "withdrawn",
			overrides: map[string]Override{"pds-record-change-1": {State: Withdrawn}},
			check: func(t *testing.T, c *Catalog) {
				if e, _ := c.Lookup("pds-record-change-1"); e.State != Withdrawn {
					t.Errorf("state %q", e.State)
				}
			},
		},
		{
			name:      "unknown code",
			overrides: map[string]Override{"vaccination-1": {Enabled: boolPtr(true)}},
			wantErr:   `event "vaccination-1": not an EventType-1 code`,
		},
		{
			name:      "unknown state",
			overrides: map[string]Override{"vaccinations-1": {State: "retired"}},
			wantErr:   `event "vaccinations-1": state "retired" is not one of`,
		},
		{
			name:      "empty override changes nothing",
			overrides: map[string]Override{"vaccinations-1": {}},
			check: func(t *testing.T, c *Catalog) {
				got, _ := c.Lookup("vaccinations-1")
				want, _ := Default().Lookup("vaccinations-1")
				if got.Enabled != want.Enabled || got.State != want.State || got.InfoURL != want.InfoURL || !got.DeprecationDate.Equal(want.DeprecationDate) {
					t.Errorf("got %+v, want %+v", got, want)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := Default()
			got, err := base.Apply(tt.overrides)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				if got != nil {
					t.Error("catalogue returned with an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, got)
			// Apply must not change the catalogue it was called on: the
			// running service may still be reading it.
			for _, e := range base.All() {
				d, _ := Default().Lookup(e.Code)
				if e.Enabled != d.Enabled || e.State != d.State {
					t.Errorf("Apply changed the receiver: %s", e.Code)
				}
			}
		})
	}
}

func TestDeprecationText(t *testing.T) {
	e, _ := Default().Lookup("pds-change-of-address-1")
	tests := []struct {
		name string
		date time.Time
		url  string
		want string
	}{
		{
			name: "date and url",
			date: time.Date(2027, 1, 5, 0, 0, 0, 0, time.UTC),
			url:  "https://digital.nhs.uk/x",
			want: "Deprecation of the PDS Change of Address (pds-change-of-address-1) event type will occur on 05/01/2027, for more information go to https://digital.nhs.uk/x",
		},
		{
			name: "defaults",
			want: "Deprecation of the PDS Change of Address (pds-change-of-address-1) event type will occur on a date to be announced, for more information go to https://digital.nhs.uk/services/national-events-management-service",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e
			e.DeprecationDate, e.InfoURL = tt.date, tt.url
			if got := e.DeprecationText(); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestAllSorted(t *testing.T) {
	all := Default().All()
	for i := 1; i < len(all); i++ {
		if all[i-1].Code >= all[i].Code {
			t.Fatalf("All() not sorted at %d: %s, %s", i, all[i-1].Code, all[i].Code)
		}
	}
}
