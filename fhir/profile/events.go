package profile

// Profile URLs of the event messages (events.md §3).
const (
	careConnect        = "https://fhir.hl7.org.uk/STU3/StructureDefinition/CareConnect-"
	EventMessageHeader = "https://fhir.nhs.uk/STU3/StructureDefinition/Event-MessageHeader-1"
)

// careConnectTypes are the resource types whose CareConnect profile
// (CareConnect-{Type}-1) every current event requires (events.md §3: "Profiles
// are CareConnect STU3 unless stated").
var careConnectTypes = map[string]bool{
	"Patient": true, "Practitioner": true, "PractitionerRole": true, "Organization": true, "Location": true,
	"Encounter": true, "AllergyIntolerance": true, "Medication": true, "MedicationRequest": true,
	"Condition": true, "FamilyMemberHistory": true, "Immunization": true, "Observation": true,
	"Procedure": true, "CareTeam": true, "Communication": true, "DiagnosticReport": true,
	"EpisodeOfCare": true, "HealthcareService": true, "RelatedPerson": true,
}

// eventProfiles holds per-event exceptions to the common rule; none of
// the current events needs one, but the DCH and PDS generations may.
var eventProfiles = map[string]map[string]string{}

// ProfileFor is the profile an event message requires for a resource type:
// Event-MessageHeader-1 for the MessageHeader, CareConnect-{Type}-1 for the
// clinical and administrative resources, "" (base STU3 only) for the rest
// (Bundle, Provenance, Task).
func ProfileFor(event, resourceType string) string {
	if m := eventProfiles[event]; m != nil {
		if p, ok := m[resourceType]; ok {
			return p
		}
	}
	switch {
	case resourceType == "MessageHeader":
		return EventMessageHeader
	}
	return careConnectProfiles[resourceType]
}

// careConnectProfiles maps careConnectTypes to their profile URLs, made
// once rather than per resource of every message.
var careConnectProfiles = func() map[string]string {
	m := make(map[string]string, len(careConnectTypes))
	for t, ok := range careConnectTypes {
		if ok {
			m[t] = careConnect + t + "-1"
		}
	}
	return m
}()
