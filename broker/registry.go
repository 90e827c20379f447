package broker

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
)

// PublisherGrant is what one registered system may publish.
type PublisherGrant struct {
	ODS    string
	Events []string // event codes; Spine-only (PDS) events must be listed explicitly
}

// RegistryAuthorizer authorises publishers from a static registry keyed by
// the fromASID header: the service's equivalent of Spine's message sets
// (publish.md §2). With an empty registry every caller may publish every
// enabled event, which suits a development machine, not production.
type RegistryAuthorizer struct {
	Grants map[string]PublisherGrant
}

var _ Authorizer = (*RegistryAuthorizer)(nil)

// AuthorizePublish implements Authorizer.
func (a *RegistryAuthorizer) AuthorizePublish(r *http.Request, ev catalog.Event) (Caller, *fhir.Issue) {
	asid := r.Header.Get("fromASID")
	if len(a.Grants) == 0 {
		return Caller{ASID: asid}, nil
	}
	if asid == "" {
		return Caller{}, &fhir.Issue{Severity: fhir.SeverityError, Code: fhir.MissingOrInvalidHeader, Expression: "fromASID",
			Diagnostics: "the fromASID header is required"}
	}
	grant, ok := a.Grants[asid]
	if !ok {
		return Caller{ASID: asid}, &fhir.Issue{Severity: fhir.SeverityError, Code: fhir.ASIDCheckFailed, Expression: "fromASID",
			Diagnostics: fmt.Sprintf("ASID %s is not registered to publish", asid)}
	}
	caller := Caller{ASID: asid, ODS: grant.ODS}
	if !slices.Contains(grant.Events, ev.Code) {
		return caller, &fhir.Issue{Severity: fhir.SeverityError, Code: fhir.AccessDenied, Expression: "Bundle.entry[0].resource.event.code",
			Diagnostics: fmt.Sprintf("ASID %s (%s) is not granted to publish %s", asid, grant.ODS, ev.Code)}
	}
	return caller, nil
}
