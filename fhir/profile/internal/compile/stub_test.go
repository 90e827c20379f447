package compile

import (
	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/profile/internal/rules"
)

type (
	fhirNode = fhir.Node
	elementT = rules.Element
)

// baseStub stands in for the compiled core types the test definition
// refers to, so the test needs no STU3 sources.
func baseStub() *rules.Set {
	s := &rules.Set{Profiles: map[string]*rules.Profile{}, ValueSets: map[string]*rules.ValueSet{}, Types: map[string]string{}}
	for _, t := range []string{"uri", "CodeableConcept", "Coding"} {
		u := CoreBase + t
		s.Profiles[u] = &rules.Profile{URL: u, Name: t, Type: t, Root: &rules.Element{ID: t, Name: t}}
		s.Types[t] = u
	}
	return s
}
