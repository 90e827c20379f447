package broker

// many marks an unbounded maximum.
const many = -1

// count is how many resources of one type a message may carry.
type count struct {
	resource string
	min, max int
}

// eventRules are the per-event rules of events.md §3 that go beyond the
// generic message structure of publish.md §4.
type eventRules struct {
	// lastUpdatedOptional: MessageHeader.meta.lastUpdated is 1..1 for every
	// current event except PDS Birth Notification and PDS Record Change.
	lastUpdatedOptional bool
	// routingOptional: the birth notification's routing demographics
	// describe the mother, who may be unknown (0..1, each part 0..1).
	routingOptional bool
	// screening: delete messages may omit routing name and birthDateTime.
	screening bool
	// contents lists the resources allowed in the bundle, by
	// messageEventType ("" applies to every type without its own list). A
	// resource type absent from the list is not allowed.
	contents map[string][]count
}

func (r *eventRules) contentsFor(messageEventType string) []count {
	if c, ok := r.contents[messageEventType]; ok {
		return c
	}
	return r.contents[""]
}

// screeningCommon is events.md §3.1, common to the three screening events.
func screeningCommon(newExtra, delExtra []count) map[string][]count {
	newC := append([]count{
		{"MessageHeader", 1, 1}, {"Encounter", 1, 1}, {"Organization", 1, many}, {"Patient", 1, 1},
		{"HealthcareService", 0, 1}, {"Location", 0, 1}, {"Communication", 0, 1},
	}, newExtra...)
	delC := append([]count{
		{"MessageHeader", 1, 1}, {"Encounter", 1, 1}, {"Organization", 0, many}, {"Patient", 0, 1},
		{"HealthcareService", 0, 1}, {"Location", 0, 1}, {"Communication", 0, 1},
	}, delExtra...)
	return map[string][]count{"new": newC, "delete": delC}
}

// pdsCommon is the shape shared by the PDS address, GP and death events:
// Communication focus, one Patient, HealthcareService 0..1, and the ODS
// organisations responsible/sending (events.md §3.2; the official change of
// address example carries none, both being ODS directory URLs).
func pdsCommon(extra ...count) map[string][]count {
	return map[string][]count{"": append([]count{
		{"MessageHeader", 1, 1}, {"Communication", 1, 1}, {"Patient", 1, 1},
		{"HealthcareService", 0, 1},
	}, extra...)}
}

// rulesByEvent holds the events with a defined bundle shape. Events enabled by
// configuration without an entry here (NEMS drafts, DCH events) get the
// generic rules only.
var rulesByEvent = map[string]*eventRules{
	"blood-spot-test-outcome-1": {screening: true, contents: screeningCommon(
		[]count{{"DiagnosticReport", 1, 1}, {"Procedure", 0, 11}},
		[]count{{"DiagnosticReport", 0, 1}, {"Procedure", 0, 11}},
	)},
	"newborn-hearing-1": {screening: true, contents: screeningCommon(
		[]count{{"Procedure", 0, 6}, {"Observation", 1, 1}, {"Practitioner", 0, 1}, {"PractitionerRole", 0, 1}},
		[]count{{"Procedure", 0, 6}, {"Observation", 0, 1}, {"Practitioner", 0, 1}, {"PractitionerRole", 0, 1}},
	)},
	"nipe-outcome-1": {screening: true, contents: screeningCommon(
		[]count{{"Procedure", 3, 4}, {"Observation", 0, 1}, {"Practitioner", 1, 1}, {"PractitionerRole", 0, 1}},
		[]count{{"Procedure", 0, 4}, {"Observation", 0, 1}, {"Practitioner", 0, 1}, {"PractitionerRole", 0, 1}},
	)},
	"pds-change-of-address-1": {contents: pdsCommon(count{"Organization", 0, 2})},
	"pds-change-of-gp-1": {contents: pdsCommon(
		count{"Organization", 0, many}, count{"EpisodeOfCare", 0, 1},
	)},
	"pds-death-notification-1": {contents: pdsCommon(count{"Organization", 0, 2})},
	"pds-birth-notification-1": {lastUpdatedOptional: true, routingOptional: true, contents: map[string][]count{"": {
		{"MessageHeader", 1, 1}, {"Communication", 1, 1}, {"Patient", 1, 2}, {"RelatedPerson", 1, 1},
		{"Practitioner", 1, 1}, {"Observation", 5, 5}, {"EpisodeOfCare", 1, 4}, {"Organization", 0, many},
		{"HealthcareService", 0, 1},
	}}},
	"pds-record-change-1": {lastUpdatedOptional: true, contents: map[string][]count{"": {
		{"MessageHeader", 1, 1}, {"Patient", 1, 1}, {"Provenance", 0, 1}, {"Organization", 0, many},
	}}},
	"professional-contacts-1": {contents: map[string][]count{"": {
		{"MessageHeader", 1, 1}, {"EpisodeOfCare", 1, 1}, {"Organization", 1, many}, {"Patient", 1, 1},
		{"CareTeam", 0, many}, {"Practitioner", 0, many}, {"PractitionerRole", 0, many},
	}}},
	"vaccinations-1": {contents: map[string][]count{"": {
		{"MessageHeader", 1, 1}, {"Immunization", 1, 1}, {"Organization", 1, many}, {"Patient", 1, 1},
		{"Practitioner", 0, many}, {"PractitionerRole", 0, many}, {"Encounter", 0, 1},
		{"HealthcareService", 0, 1}, {"Location", 0, many},
	}}},
}
