package delivery

import (
	"time"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/subscription"
)

const (
	systemNHSNumber = "https://fhir.nhs.uk/Id/nhs-number"
	systemODS       = "https://fhir.nhs.uk/Id/ods-organization-code"
)

// Facts derives what the matcher needs from an event's headers and bundle:
// the patient is the Patient entry carrying the routing NHS number (else the
// first Patient); its GP is the Organization its generalPractitioner
// references. Geography awaits the reference-data store.
func Facts(eventCode, messageEventType, nhs string, bundle *fhir.Node) subscription.EventFacts {
	f := subscription.EventFacts{EventCode: eventCode, MessageEventType: messageEventType, NHSNumber: nhs}
	if bundle == nil {
		return f
	}
	byURL := map[string]*fhir.Node{}
	var patients []*fhir.Node
	for _, e := range bundle.ChildrenNamed("entry") {
		r := e.Child("resource").Resource()
		if r == nil {
			continue
		}
		byURL[e.Str("fullUrl")] = r
		if r.ResourceType == "Patient" {
			patients = append(patients, r)
		}
	}
	var patient *fhir.Node
	for _, p := range patients {
		for _, id := range p.ChildrenNamed("identifier") {
			if id.Str("value") == nhs && nhs != "" {
				patient = p
			}
		}
	}
	if patient == nil && len(patients) > 0 {
		patient = patients[0]
	}
	if patient == nil {
		return f
	}
	if b := patient.Str("birthDate"); b != "" {
		if t, err := time.Parse("2006-01-02", b); err == nil {
			f.BirthDate = t
		}
	}
	for _, gp := range patient.ChildrenNamed("generalPractitioner") {
		org := byURL[gp.Str("reference")]
		if org == nil || org.ResourceType != "Organization" {
			continue
		}
		for _, id := range org.ChildrenNamed("identifier") {
			if id.Str("system") == systemODS && id.Str("value") != "" {
				f.GPPractice = id.Str("value")
				registered := true
				f.Registered = &registered
			}
		}
		if f.GPPractice != "" {
			break
		}
	}
	return f
}
