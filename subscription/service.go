package subscription

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
)

// Policy holds the deployment choices the specification leaves open.
type Policy struct {
	// AllowDuplicates stores a create that equals a live subscription of
	// the same owner and endpoint; by default it is rejected with
	// DUPLICATE_REJECTED.
	AllowDuplicates bool
	// DuplicateStatus is the HTTP status of DUPLICATE_REJECTED: 422 (Spine
	// Core, the default) or 409 (GP Connect).
	DuplicateStatus int
	// Review lists, per owner ODS code ("*" = every owner), the kinds that
	// wait in requested until an operator approves them. Everything else is
	// activated at creation, as NEMS does.
	Review map[string][]Kind
	// AutoActivate, when not nil, is the positive form and takes
	// precedence over Review: only subscriptions whose owner ODS code (or
	// "*") lists their kind are activated at creation; every other one
	// waits in requested. config's subscriptions.auto_activate maps onto it
	// directly.
	AutoActivate map[string][]Kind
	// AllowHTTPWebhooks accepts http:// rest-hook endpoints (tests, local
	// networks); https is always accepted.
	AllowHTTPWebhooks bool
	// RequireIfMatch makes PUT without If-Match fail with 412.
	RequireIfMatch bool
}

// needsReview reports whether a new subscription of this owner and kind
// waits for an operator.
func (p Policy) needsReview(owner string, k Kind) bool {
	if p.AutoActivate != nil {
		return !listed(p.AutoActivate, owner, k)
	}
	return listed(p.Review, owner, k)
}

// listed reports whether kind k is listed for owner or for "*".
func listed(m map[string][]Kind, owner string, k Kind) bool {
	for _, key := range []string{owner, "*"} {
		for _, x := range m[key] {
			if x == k {
				return true
			}
		}
	}
	return false
}

// Service is the subscription logic independent of HTTP: create and update
// with validation and ownership, and the lifecycle operations the admin API
// and the expiry sweep use.
type Service struct {
	store     *Store
	catalog   *catalog.Catalog
	mailboxes MailboxOwners
	policy    Policy
	now       func() time.Time
	log       *slog.Logger

	memOnce sync.Once
	mem     *MemIndex
	memErr  error
}

// Store returns the underlying store (the matcher reads its indexes).
func (s *Service) Store() *Store { return s.store }

// Matcher returns a matcher that reads the store's match indexes with
// bbolt prefix scans: no memory beyond the page cache, always consistent
// with the store, and flat in cost from 1k to 1M subscriptions (see
// docs/subscriptions.md for the figures).
func (s *Service) Matcher() (*Matcher, error) {
	return NewMatcher(MatcherOptions{Index: s.store, Catalog: s.catalog, Now: s.now}), nil
}

// MemoryMatcher returns a matcher over an in-memory copy of the match
// indexes that follows the store (built on first use, then shared): about
// three times cheaper per event than Matcher, for about 370 bytes of heap
// per active subscription.
func (s *Service) MemoryMatcher() (*Matcher, error) {
	s.memOnce.Do(func() { s.mem, s.memErr = NewMemIndex(s.store) })
	if s.memErr != nil {
		return nil, s.memErr
	}
	return NewMatcher(MatcherOptions{Index: s.mem, Catalog: s.catalog, Now: s.now}), nil
}

func outcomeOf(code fhir.SpineCode, expr, diag string) *fhir.Outcome {
	o := &fhir.Outcome{}
	o.Error(code, expr, diag)
	return o
}

// authorise checks that the caller may own a subscription with this
// content: the contact ODS code is the caller's, the mailbox belongs to it,
// and it may subscribe to every event.
func (s *Service) authorise(c Caller, d *draft) *fhir.Outcome {
	if d.Owner != c.ODS {
		return outcomeOf(fhir.AccessDenied, "Subscription.contact[0].value",
			fmt.Sprintf("the subscribing organisation %s is not the caller's organisation %s (ASID %s)", d.Owner, c.ODS, c.ASID))
	}
	if d.Channel.Type == ChannelMessage && s.mailboxes != nil {
		if owner, ok := s.mailboxes.MailboxOwner(d.Channel.Endpoint); !ok || owner != d.Owner {
			return outcomeOf(fhir.AccessDenied, "Subscription.channel.endpoint",
				fmt.Sprintf("MESH mailbox %s is not registered to organisation %s", d.Channel.Endpoint, d.Owner))
		}
	}
	if !c.MayCreate(d.Criteria.Kind) {
		return outcomeOf(fhir.AccessDenied, "Subscription.criteria",
			fmt.Sprintf("ASID %s is not permitted to create %s subscriptions", c.ASID, d.Criteria.Kind))
	}
	if c.RequestingPatient != "" && d.Criteria.Kind == Explicit && d.Criteria.NHSNumber != c.RequestingPatient {
		return outcomeOf(fhir.RequestUnmatched, "Subscription.criteria",
			fmt.Sprintf("the criteria's NHS number %s is not the token's requesting_patient %s", d.Criteria.NHSNumber, c.RequestingPatient))
	}
	for _, e := range d.Criteria.Events {
		if !c.MaySubscribe(e) {
			return outcomeOf(fhir.AccessDenied, "Subscription.criteria",
				fmt.Sprintf("ASID %s is not permitted to subscribe to %s", c.ASID, e))
		}
	}
	return nil
}

// validate runs the content checks shared by create and update; it
// returns the warnings (DEPRECATED) and the failure, if any.
func (s *Service) validate(c Caller, root *fhir.Node) (*draft, []fhir.Issue, *fhir.Outcome) {
	d, out := readDraft(root, s.now(), s.policy.AllowHTTPWebhooks)
	if out.Errors() {
		return nil, nil, out
	}
	if o := s.authorise(c, d); o != nil {
		return nil, nil, o
	}
	checkEvents(s.catalog, d.Criteria, out)
	if out.Errors() {
		return nil, nil, out
	}
	return d, out.Issues, nil
}

func (d *draft) apply(sub *Subscription) {
	sub.Owner, sub.Contacts, sub.Reason = d.Owner, d.Contacts, d.Reason
	sub.CriteriaText, sub.Criteria, sub.Channel = d.CritText, d.Criteria, d.Channel
	sub.End, sub.EndText = d.End, d.EndText
}

func actorOf(c Caller) string { return "asid:" + c.ASID }

// Create validates and stores a subscription sent by the caller. It
// returns the stored subscription and any warnings, or an outcome that
// says why it was refused.
func (s *Service) Create(ctx context.Context, c Caller, root *fhir.Node) (*Subscription, []fhir.Issue, *fhir.Outcome) {
	d, warnings, out := s.validate(c, root)
	if out != nil {
		return nil, nil, out
	}
	switch {
	case d.ID != "":
		return nil, nil, outcomeOf(fhir.InvalidResource, "Subscription.id", "the server assigns the id; a create must not carry one")
	case d.MetaSent:
		return nil, nil, outcomeOf(fhir.InvalidResource, "Subscription.meta", "meta.versionId and meta.lastUpdated are assigned by the server")
	case d.Status != StatusRequested:
		return nil, nil, outcomeOf(fhir.InvalidResource, "Subscription.status", fmt.Sprintf("a new subscription must have status requested, not %q", d.Status))
	}
	sub := Subscription{Status: StatusActive, CreatedBy: c.ASID}
	if s.policy.needsReview(d.Owner, d.Criteria.Kind) {
		sub.Status = StatusRequested
	}
	d.apply(&sub)
	stored, err := s.store.Create(sub, actorOf(c), CreateOptions{RejectDuplicate: !s.policy.AllowDuplicates})
	if err != nil {
		return nil, nil, s.storeFailure(ctx, "creating subscription", err)
	}
	s.log.InfoContext(ctx, "subscription created", "id", stored.ID, "owner", stored.Owner, "asid", c.ASID,
		"kind", stored.Criteria.Kind.String(), "status", string(stored.Status), "endpoint", stored.Channel.Endpoint)
	return stored, warnings, nil
}

// storeFailure turns a store error into the outcome the client sees.
func (s *Service) storeFailure(ctx context.Context, doing string, err error) *fhir.Outcome {
	var dup *DuplicateError
	switch {
	case errors.As(err, &dup):
		return outcomeOf(fhir.DuplicateRejected, "Subscription.criteria",
			fmt.Sprintf("an equivalent subscription already exists: %s (same organisation, endpoint and criteria)", dup.ExistingID))
	case errors.Is(err, ErrNotFound):
		return outcomeOf(fhir.NoRecordFound, "", "no such subscription")
	case errors.Is(err, ErrVersionConflict):
		return outcomeOf(fhir.PreconditionFailed, "", err.Error())
	case errors.Is(err, ErrTransition):
		return outcomeOf(fhir.InvalidResource, "Subscription.status", err.Error())
	}
	s.log.ErrorContext(ctx, doing, "err", err)
	return outcomeOf(fhir.InternalServerError, "", doing+" failed; the error has been logged")
}

// Get returns a subscription the caller owns.
func (s *Service) Get(ctx context.Context, c Caller, id string) (*Subscription, *fhir.Outcome) {
	sub, err := s.store.Get(id)
	if err != nil {
		return nil, s.storeFailure(ctx, "reading subscription", err)
	}
	if sub.Owner != c.ODS {
		s.log.WarnContext(ctx, "subscription access denied", "id", id, "asid", c.ASID, "ods", c.ODS)
		return nil, outcomeOf(fhir.AccessDenied, "", fmt.Sprintf("subscription %s belongs to another organisation", id))
	}
	return sub, nil
}

// Update replaces a subscription the caller owns (PUT). ifVersion, when not
// zero, is the versionId the caller last saw.
func (s *Service) Update(ctx context.Context, c Caller, id string, ifVersion uint64, root *fhir.Node) (*Subscription, []fhir.Issue, *fhir.Outcome) {
	old, o := s.Get(ctx, c, id)
	if o != nil {
		return nil, nil, o
	}
	d, warnings, out := s.validate(c, root)
	if out != nil {
		return nil, nil, out
	}
	if d.ID != "" && d.ID != id {
		return nil, nil, outcomeOf(fhir.BadRequest, "Subscription.id", fmt.Sprintf("the body's id %s differs from the URL's %s", d.ID, id))
	}
	if d.Status != old.Status {
		return nil, nil, outcomeOf(fhir.InvalidResource, "Subscription.status",
			fmt.Sprintf("status is %s; it changes through approval, suspension or end, not by update", old.Status))
	}
	review := s.policy.needsReview(d.Owner, d.Criteria.Kind)
	updated, err := s.store.Update(id, ifVersion, actorOf(c), CreateOptions{RejectDuplicate: !s.policy.AllowDuplicates}, func(sub *Subscription) error {
		if sub.Owner != c.ODS {
			return ErrNotFound // ownership changed under us; treat as gone
		}
		changed := sub.Criteria.Normalised() != d.Criteria.Normalised() || sub.Channel.Type != d.Channel.Type || sub.Channel.Endpoint != d.Channel.Endpoint
		d.apply(sub)
		// New criteria or a new endpoint under a review policy go back to
		// the operator rather than bypassing review through an update.
		if review && changed && sub.Status == StatusActive {
			sub.Status = StatusRequested
		}
		return nil
	})
	if err != nil {
		return nil, nil, s.storeFailure(ctx, "updating subscription", err)
	}
	s.log.InfoContext(ctx, "subscription updated", "id", id, "owner", updated.Owner, "asid", c.ASID, "version", updated.VersionID)
	return updated, warnings, nil
}

// Delete removes a subscription the caller owns.
func (s *Service) Delete(ctx context.Context, c Caller, id string) *fhir.Outcome {
	if _, o := s.Get(ctx, c, id); o != nil {
		return o
	}
	if err := s.store.Delete(id, actorOf(c)); err != nil {
		return s.storeFailure(ctx, "deleting subscription", err)
	}
	s.log.InfoContext(ctx, "subscription deleted", "id", id, "asid", c.ASID)
	return nil
}

// Approve activates a requested subscription (operator review).
func (s *Service) Approve(id, actor, note string) (*Subscription, error) {
	return s.store.SetStatusFrom(id, []Status{StatusRequested}, StatusActive, actor, note)
}

// Reject turns a requested subscription off without activating it.
func (s *Service) Reject(id, actor, note string) (*Subscription, error) {
	return s.store.SetStatusFrom(id, []Status{StatusRequested}, StatusOff, actor, note)
}

// Suspend turns an active or failing subscription off.
func (s *Service) Suspend(id, actor, note string) (*Subscription, error) {
	return s.store.SetStatusFrom(id, []Status{StatusActive, StatusError}, StatusOff, actor, note)
}

// Resume reactivates a suspended or failing subscription, unless its end
// has passed.
func (s *Service) Resume(id, actor, note string) (*Subscription, error) {
	sub, err := s.store.Get(id)
	if err != nil {
		return nil, err
	}
	if sub.Ended(s.now()) {
		return nil, fmt.Errorf("%w: subscription %s ended at %s", ErrTransition, id, sub.End.Format(time.RFC3339))
	}
	return s.store.SetStatusFrom(id, []Status{StatusOff, StatusError}, StatusActive, actor, note)
}

// MarkError records a delivery failure that stops the subscription.
func (s *Service) MarkError(id, actor, note string) (*Subscription, error) {
	return s.store.SetStatusFrom(id, []Status{StatusActive}, StatusError, actor, note)
}

// AdminDelete removes any subscription (operator action).
func (s *Service) AdminDelete(id, actor string) error { return s.store.Delete(id, actor) }

// ListPending lists subscriptions waiting for approval.
func (s *Service) ListPending(after string, limit int) ([]*Subscription, bool, error) {
	return s.store.List(Query{Status: StatusRequested, After: after, Limit: limit})
}

// History lists who changed a subscription, when and how.
func (s *Service) History(id string) ([]HistoryEntry, error) { return s.store.History(id) }

// SweepExpired turns off subscriptions whose end has passed.
func (s *Service) SweepExpired(ctx context.Context) ([]string, error) {
	ids, err := s.store.ExpireDue(s.now(), "system:expiry")
	for _, id := range ids {
		s.log.InfoContext(ctx, "subscription ended", "id", id)
	}
	return ids, err
}

// RunExpirySweep runs SweepExpired every interval until ctx ends.
func (s *Service) RunExpirySweep(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := s.SweepExpired(ctx); err != nil {
			s.log.ErrorContext(ctx, "subscription expiry sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
