package fhir

import "strings"

// The wire contract of a stored event: the subject it is published on and the
// headers it carries. The broker writes it and delivery reads it, so it lives
// below both.
const (
	// EventSubjectPrefix starts every event subject:
	// ems.events.<event-code>.<nhs-number>.
	EventSubjectPrefix = "ems.events."
	// NoNHSNumber stands in the subject for an event that names no patient
	// (a birth notification whose mother is unknown).
	NoNHSNumber = "none"

	HeaderEventCode        = "Ems-Event-Code"
	HeaderNHSNumber        = "Ems-Nhs-Number"
	HeaderMessageEventType = "Ems-Message-Event-Type"
	HeaderPublisherASID    = "Ems-Publisher-Asid"
	HeaderPublisherODS     = "Ems-Publisher-Ods"
	HeaderReceivedAt       = "Ems-Received-At"
	HeaderContentType      = "Ems-Content-Type"
	HeaderMessageID        = "Ems-Message-Id"
)

// EventSubject is the subject an event is stored under.
func EventSubject(eventCode, nhsNumber string) string {
	if nhsNumber == "" {
		nhsNumber = NoNHSNumber
	}
	return EventSubjectPrefix + eventCode + "." + nhsNumber
}

// ParseEventSubject splits an event subject into its event code and NHS
// number ("" for NoNHSNumber).
func ParseEventSubject(subject string) (eventCode, nhsNumber string, ok bool) {
	rest, found := strings.CutPrefix(subject, EventSubjectPrefix)
	if !found {
		return "", "", false
	}
	eventCode, nhsNumber, ok = strings.Cut(rest, ".")
	if !ok || eventCode == "" || nhsNumber == "" || strings.Contains(nhsNumber, ".") {
		return "", "", false
	}
	if nhsNumber == NoNHSNumber {
		nhsNumber = ""
	}
	return eventCode, nhsNumber, true
}
