package identity

import (
	"net/http"

	"github.com/ems-broker/ems/broker"
	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
)

// PublishScope is the JWT scope of $process-message.
const PublishScope = "patient/Bundle.write"

// PublishInteraction is the InteractionID of publishing ev: its
// PublishCode, or its event code for Spine-published events.
func PublishInteraction(ev catalog.Event) string {
	if ev.PublishCode == "" {
		return "urn:nhs:names:services:events:" + ev.Code + ".Write"
	}
	return "urn:nhs:names:services:events:" + ev.PublishCode + ".Write"
}

// PublishAuthorizer implements broker.Authorizer: the caller must be
// authenticated for publishing and granted the event.
type PublishAuthorizer struct {
	Auth *Authenticator
}

var _ broker.Authorizer = PublishAuthorizer{}

// AuthorizePublish implements broker.Authorizer.
func (p PublishAuthorizer) AuthorizePublish(r *http.Request, ev catalog.Event) (broker.Caller, *fhir.Issue) {
	a := p.Auth
	if p.open(r) {
		// No registry and nothing required: a development setup where
		// anyone may publish (as before this package existed).
		return broker.Caller{ASID: r.Header.Get("fromASID")}, nil
	}
	// The broker checks the header against the bundle's event too; here
	// a wrong InteractionID is refused whatever the broker's settings. As
	// the broker does, the lower-case event code form of the NEMS
	// reference implementation is accepted, and is the only form for
	// Spine-published (PDS) events, which have no PublishCode.
	op := Operation{Name: "publish", Scopes: []string{PublishScope},
		Interactions: []string{PublishInteraction(ev), "urn:nhs:names:services:events:" + ev.Code + ".Write"}}
	c, issue := a.Authenticate(r, op)
	caller := broker.Caller{ASID: c.System.ASID, ODS: c.System.ODS}
	if issue != nil {
		return caller, issue
	}
	spineOnly := !ev.Publishable || ev.PublishCode == ""
	if !c.System.MayPublish(ev.Code, spineOnly) {
		issue := refusal(fhir.AccessDenied, "Bundle.entry[0].resource.event.code", "ASID %s (%s) is not granted to publish %s", c.System.ASID, c.System.ODS, ev.Code)
		a.opts.Logger.Warn("caller refused", "operation", "publish", "asid", c.System.ASID, "ods", c.System.ODS, "code", string(issue.Code), "event", ev.Code)
		return caller, a.refused(r, issue)
	}
	return caller, nil
}

// Gate authenticates the caller of a publish before next reads the body,
// so that an unauthenticated party cannot make the service parse and
// validate megabytes. The grant and InteractionID, which need the bundle's
// event, are still checked by AuthorizePublish once the broker knows it;
// the rate limit is counted there only.
func (p PublishAuthorizer) Gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := p.Auth
		if r.Method == http.MethodPost && !p.open(r) {
			if c, issue := a.authenticate(r, Operation{Name: "publish", Scopes: []string{PublishScope}}); issue != nil {
				a.opts.Logger.Warn("caller refused", "operation", "publish", "asid", c.System.ASID, "ods", c.System.ODS,
					"code", string(issue.Code), "reason", issue.Diagnostics, "remote", r.RemoteAddr)
				if st := stateOf(r.Context()); st != nil {
					st.caller, st.operation = c, "publish"
				}
				WriteOutcome(w, r, &fhir.Outcome{Issues: []fhir.Issue{*a.refused(r, issue)}})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// open reports the development setup where anyone may publish.
func (p PublishAuthorizer) open(r *http.Request) bool {
	o := p.Auth.opts
	return !o.RequireIdentity && o.Registry.Len() == 0 && r.Header.Get("Authorization") == "" && !o.RequireClientCert
}
