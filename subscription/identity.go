package subscription

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/ems-broker/ems/fhir"
)

// Caller is the organisation behind a request.
type Caller struct {
	ASID string
	ODS  string
	// SubscribeEvents are the event codes the caller may subscribe to (the
	// NEMS_EVENT_ID category bag); empty means no restriction.
	SubscribeEvents []string
	// SubscribeKinds are the subscription kinds the caller may create (the
	// NEMS_SUBS_TYPE category bag); empty means both.
	SubscribeKinds []Kind
	// RequestingPatient is the JWT requesting_patient claim, when a
	// verified token carries one: an explicit subscription must then be for
	// that patient (subscriptions.md §1).
	RequestingPatient string
}

// MayCreate reports whether the caller may create subscriptions of kind k.
func (c Caller) MayCreate(k Kind) bool {
	return len(c.SubscribeKinds) == 0 || slices.Contains(c.SubscribeKinds, k)
}

// MaySubscribe reports whether the caller may subscribe to event code.
func (c Caller) MaySubscribe(code string) bool {
	if len(c.SubscribeEvents) == 0 {
		return true
	}
	for _, e := range c.SubscribeEvents {
		if e == code || e == "*" {
			return true
		}
	}
	return false
}

// Identifier tells who is calling. Until the security work lands this is
// the fromASID header looked up in a registry; later a verified token.
type Identifier interface {
	Identify(r *http.Request) (Caller, *fhir.Outcome)
}

// MailboxOwners says which organisation owns a MESH mailbox.
type MailboxOwners interface {
	MailboxOwner(mailbox string) (ods string, ok bool)
}

// RegistryEntry is one ASID of the configured registry
// (config registry.asids).
type RegistryEntry struct {
	ODS             string
	Mailboxes       []string
	SubscribeEvents []string
	// SubscribeKinds limits the kinds (empty: both).
	SubscribeKinds []Kind
}

// RegistryIdentifier identifies callers by the fromASID header and owns the
// mailbox → ODS map derived from the same registry.
type RegistryIdentifier struct {
	asids     map[string]RegistryEntry
	mailboxes map[string]string
}

// NewRegistryIdentifier builds the identifier from ASID → entry. A mailbox
// listed under two ASIDs of different organisations is a configuration
// error: ownership would be ambiguous.
func NewRegistryIdentifier(asids map[string]RegistryEntry) (*RegistryIdentifier, error) {
	r := &RegistryIdentifier{asids: make(map[string]RegistryEntry, len(asids)), mailboxes: map[string]string{}}
	for asid, e := range asids {
		if !validOrgCode(e.ODS) {
			return nil, fmt.Errorf("registry ASID %s: ODS code %q is not 3 to 10 upper-case letters and digits", asid, e.ODS)
		}
		r.asids[asid] = e
		for _, mb := range e.Mailboxes {
			if prev, ok := r.mailboxes[mb]; ok && prev != e.ODS {
				return nil, fmt.Errorf("registry: mailbox %s is listed for both %s and %s", mb, prev, e.ODS)
			}
			r.mailboxes[mb] = e.ODS
		}
	}
	return r, nil
}

// Identify implements Identifier.
func (r *RegistryIdentifier) Identify(req *http.Request) (Caller, *fhir.Outcome) {
	asid := strings.TrimSpace(req.Header.Get("fromASID"))
	if asid == "" {
		out := &fhir.Outcome{}
		out.Error(fhir.MissingOrInvalidHeader, "", "the fromASID header is required")
		return Caller{}, out
	}
	e, ok := r.asids[asid]
	if !ok {
		out := &fhir.Outcome{}
		out.Error(fhir.ASIDCheckFailed, "", "ASID "+asid+" is not registered with this service")
		return Caller{}, out
	}
	return Caller{ASID: asid, ODS: e.ODS, SubscribeEvents: e.SubscribeEvents, SubscribeKinds: e.SubscribeKinds}, nil
}

// MailboxOwner implements MailboxOwners.
func (r *RegistryIdentifier) MailboxOwner(mailbox string) (string, bool) {
	ods, ok := r.mailboxes[mailbox]
	return ods, ok
}
