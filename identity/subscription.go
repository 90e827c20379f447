package identity

import (
	"bytes"
	"io"
	"net/http"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/subscription"
)

// Subscription API scopes and InteractionIDs (subscriptions.md §1).
const (
	SubscriptionReadScope  = "patient/Subscription.read"
	SubscriptionWriteScope = "patient/Subscription.write"

	interactionSubs        = "urn:nhs:names:services:clinicals-sync:SubscriptionsApi"
	SubscriptionPostAction = interactionSubs + "Post"
	SubscriptionGetAction  = interactionSubs + "Get"
	SubscriptionDelete     = interactionSubs + "Delete"
	SubscriptionPutAction  = interactionSubs + "Put"
)

// SubscriptionIdentifier implements subscription.Identifier (and
// subscription.MailboxOwners, from the same registry).
type SubscriptionIdentifier struct {
	Auth *Authenticator
	// MaxBodyBytes bounds the body read to check the subscription kind;
	// zero: 64 KiB (the subscription handler's own limit).
	MaxBodyBytes int64
}

var (
	_ subscription.Identifier    = SubscriptionIdentifier{}
	_ subscription.MailboxOwners = SubscriptionIdentifier{}
)

// subscriptionOperation maps the method onto scopes and InteractionIDs.
// A read also accepts the write scope and the Post interaction: fhirclient
// reads back the Location of a create with the create's headers
// (clients.md), and a write grant is the stronger one.
func subscriptionOperation(method string) Operation {
	switch method {
	case http.MethodPost:
		return Operation{Name: "subscription.create", Scopes: []string{SubscriptionWriteScope}, Interactions: []string{SubscriptionPostAction}}
	case http.MethodPut:
		return Operation{Name: "subscription.update", Scopes: []string{SubscriptionWriteScope}, Interactions: []string{SubscriptionPutAction, SubscriptionPostAction}}
	case http.MethodDelete:
		return Operation{Name: "subscription.delete", Scopes: []string{SubscriptionWriteScope}, Interactions: []string{SubscriptionDelete}}
	default:
		return Operation{Name: "subscription.read", Scopes: []string{SubscriptionReadScope, SubscriptionWriteScope}, Interactions: []string{SubscriptionGetAction, SubscriptionPostAction}}
	}
}

// Identify implements subscription.Identifier. For a create or update it
// also checks the subscription kind (explicit or generic) against the
// caller's grant, which needs a look at the body: subscription.Caller has
// no field for it yet.
func (s SubscriptionIdentifier) Identify(r *http.Request) (subscription.Caller, *fhir.Outcome) {
	c, issue := s.Auth.Authenticate(r, subscriptionOperation(r.Method))
	if issue != nil {
		return subscription.Caller{ASID: c.System.ASID, ODS: c.System.ODS}, &fhir.Outcome{Issues: []fhir.Issue{*issue}}
	}
	caller := subscription.Caller{ASID: c.System.ASID, ODS: c.System.ODS, SubscribeEvents: c.System.SubscribeEvents}
	if (r.Method == http.MethodPost || r.Method == http.MethodPut) && (len(c.System.SubscriptionKinds) > 0 || c.Patient != "") {
		crit, ok := s.peekCriteria(r)
		var issue *fhir.Issue
		switch {
		case !ok:
		case !c.System.MaySubscribeKind(crit.Kind.String()):
			issue = refusal(fhir.AccessDenied, "Subscription.criteria", "ASID %s (%s) is not granted %s subscriptions", c.System.ASID, c.System.ODS, crit.Kind)
		case c.Patient != "" && crit.Kind == subscription.Explicit && crit.NHSNumber != c.Patient:
			// The token was issued for one patient; the subscription names
			// another (errors.md: REQUEST_UNMATCHED).
			issue = refusal(fhir.RequestUnmatched, "Subscription.criteria", "the criteria's NHS number is not the JWT requesting_patient")
		}
		if issue != nil {
			s.Auth.opts.Logger.Warn("caller refused", "operation", "subscription.create", "asid", c.System.ASID, "ods", c.System.ODS, "code", string(issue.Code), "reason", issue.Diagnostics)
			return caller, &fhir.Outcome{Issues: []fhir.Issue{*s.Auth.refused(r, issue)}}
		}
	}
	return caller, nil
}

// peekCriteria reads the body (bounded), puts it back for the handler, and
// parses its criteria. A body that cannot be read as a
// Subscription is left to the handler to refuse with the precise error.
func (s SubscriptionIdentifier) peekCriteria(r *http.Request) (subscription.Criteria, bool) {
	limit := s.MaxBodyBytes
	if limit <= 0 {
		limit = 64 << 10
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	r.Body = readCloser{io.MultiReader(bytes.NewReader(data), r.Body), r.Body}
	if err != nil || int64(len(data)) > limit {
		return subscription.Criteria{}, false
	}
	f := fhir.Sniff(data)
	if ct := r.Header.Get("Content-Type"); ct != "" {
		f, _ = fhir.FormatForContentType(ct)
	}
	if f == fhir.FormatUnknown {
		return subscription.Criteria{}, false
	}
	root, err := fhir.Parse(data, f, fhir.DefaultLimits())
	if err != nil || root == nil {
		return subscription.Criteria{}, false
	}
	crit, cerr := subscription.ParseCriteria(root.Str("criteria"))
	if cerr != nil {
		return subscription.Criteria{}, false
	}
	return crit, true
}

type readCloser struct {
	io.Reader
	io.Closer
}

// MailboxOwner implements subscription.MailboxOwners.
func (s SubscriptionIdentifier) MailboxOwner(mailbox string) (string, bool) {
	return s.Auth.opts.Registry.MailboxOwner(mailbox)
}
