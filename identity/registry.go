package identity

import (
	"fmt"
	"regexp"
	"slices"
)

// Subscription kinds an ASID may be granted (the NEMS_SUBS_TYPE category
// bag, subscriptions.md §4).
const (
	KindExplicit = "explicit"
	KindGeneric  = "generic"
)

// System is one registered ASID: the service's equivalent of Spine's
// directory entry, message sets and category bags.
type System struct {
	ASID string
	ODS  string
	// PublishEvents are the event codes the system may publish. "*" grants
	// every event open to publishers; events only Spine publishes (PDS)
	// must be listed by code.
	PublishEvents []string
	// SubscribeEvents are the event codes it may subscribe to; empty or
	// "*" means any.
	SubscribeEvents []string
	// SubscriptionKinds are "explicit" and/or "generic"; empty means both.
	SubscriptionKinds []string
	// Mailboxes are the MESH mailboxes the organisation owns.
	Mailboxes []string
}

// MayPublish reports whether the system may publish code. spineOnly marks
// events the publication API does not normally accept (PDS): those need an
// explicit grant, never the wildcard.
func (s System) MayPublish(code string, spineOnly bool) bool {
	if slices.Contains(s.PublishEvents, code) {
		return true
	}
	return !spineOnly && slices.Contains(s.PublishEvents, "*")
}

// MaySubscribeKind reports whether the system may create subscriptions of
// kind ("explicit" or "generic").
func (s System) MaySubscribeKind(kind string) bool {
	return len(s.SubscriptionKinds) == 0 || slices.Contains(s.SubscriptionKinds, kind)
}

// Registry is the table of known systems, keyed by ASID.
type Registry struct {
	systems   map[string]System
	mailboxes map[string]string // mailbox → ODS
}

var (
	asidRE = regexp.MustCompile(`^[0-9]{1,20}$`)
	odsRE  = regexp.MustCompile(`^[A-Z0-9]{3,10}$`)
)

// NewRegistry checks and indexes systems. A mailbox claimed by two
// organisations is refused: ownership would be ambiguous and either could
// read the other's deliveries.
func NewRegistry(systems []System) (*Registry, error) {
	r := &Registry{systems: map[string]System{}, mailboxes: map[string]string{}}
	for _, s := range systems {
		if !asidRE.MatchString(s.ASID) {
			return nil, fmt.Errorf("registry: ASID %q is not 1 to 20 digits", s.ASID)
		}
		if !odsRE.MatchString(s.ODS) {
			return nil, fmt.Errorf("registry: ASID %s: ODS code %q is not 3 to 10 upper-case letters and digits", s.ASID, s.ODS)
		}
		if _, dup := r.systems[s.ASID]; dup {
			return nil, fmt.Errorf("registry: ASID %s is listed twice", s.ASID)
		}
		for _, k := range s.SubscriptionKinds {
			if k != KindExplicit && k != KindGeneric {
				return nil, fmt.Errorf("registry: ASID %s: subscription kind %q is not explicit or generic", s.ASID, k)
			}
		}
		for _, mb := range s.Mailboxes {
			if prev, ok := r.mailboxes[mb]; ok && prev != s.ODS {
				return nil, fmt.Errorf("registry: mailbox %s is listed for both %s and %s", mb, prev, s.ODS)
			}
			r.mailboxes[mb] = s.ODS
		}
		r.systems[s.ASID] = s
	}
	return r, nil
}

// Lookup returns the system registered under asid.
func (r *Registry) Lookup(asid string) (System, bool) {
	s, ok := r.systems[asid]
	return s, ok
}

// Len is the number of registered systems.
func (r *Registry) Len() int { return len(r.systems) }

// MailboxOwner implements subscription.MailboxOwners.
func (r *Registry) MailboxOwner(mailbox string) (string, bool) {
	ods, ok := r.mailboxes[mailbox]
	return ods, ok
}
