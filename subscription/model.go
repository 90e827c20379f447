// Package subscription owns NEMS subscriptions: the Subscription model and
// its status lifecycle, the criteria grammar, the bbolt store with its
// secondary indexes, the index-driven matcher that answers "which active
// subscriptions does this event match?", and the /STU3/Subscription HTTP
// API. It knows nothing of NATS or of how matched events are delivered.
package subscription

import (
	"fmt"
	"time"
)

// Status is Subscription.status.
type Status string

// Statuses (FHIR STU3 SubscriptionStatus).
const (
	StatusRequested Status = "requested"
	StatusActive    Status = "active"
	StatusError     Status = "error"
	StatusOff       Status = "off"
)

// Valid reports whether s is one of the four statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusRequested, StatusActive, StatusError, StatusOff:
		return true
	}
	return false
}

// transitions lists the status changes the lifecycle allows. requested
// becomes active by approval (operator or policy) or off if refused; active
// and off toggle by suspend/resume; error is entered by delivery and left by
// an operator's resume or suspend. Anything else is a bug in the caller.
var transitions = map[Status][]Status{
	StatusRequested: {StatusActive, StatusOff},
	StatusActive:    {StatusOff, StatusError},
	StatusOff:       {StatusActive},
	StatusError:     {StatusActive, StatusOff},
}

// CanTransition reports whether from → to is a lifecycle step.
func CanTransition(from, to Status) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Channel types.
const (
	ChannelMessage  = "message"   // MESH mailbox
	ChannelRestHook = "rest-hook" // this product's webhook channel
)

// Contact is one Subscription.contact (ContactPoint).
type Contact struct {
	System string `json:"system,omitempty"`
	Value  string `json:"value,omitempty"`
	Use    string `json:"use,omitempty"`
}

// Channel is Subscription.channel.
type Channel struct {
	Type     string   `json:"type"`
	Endpoint string   `json:"endpoint"`
	Payload  string   `json:"payload,omitempty"`
	Headers  []string `json:"headers,omitempty"`
}

// Subscription is one stored subscription. The criteria are held parsed;
// CriteriaText is the client's verbatim string, returned unchanged on read.
type Subscription struct {
	ID          string    `json:"id"`
	VersionID   uint64    `json:"versionId"`
	Created     time.Time `json:"created"`
	LastUpdated time.Time `json:"lastUpdated"`
	Status      Status    `json:"status"`
	// Owner is the ODS code of the first contact: the organisation that
	// may read, change and delete the subscription.
	Owner        string    `json:"owner"`
	Contacts     []Contact `json:"contacts"`
	Reason       string    `json:"reason"`
	CriteriaText string    `json:"criteriaText"`
	Criteria     Criteria  `json:"criteria"`
	Channel      Channel   `json:"channel"`
	// End is the instant the subscription stops matching; zero = never.
	End time.Time `json:"end,omitzero"`
	// EndText is Subscription.end as received, returned unchanged.
	EndText string `json:"endText,omitempty"`
	// CreatedBy is the ASID (or operator) that created it.
	CreatedBy string `json:"createdBy,omitempty"`
}

// Ended reports whether the end instant has passed at now.
func (s *Subscription) Ended(now time.Time) bool {
	return !s.End.IsZero() && !now.Before(s.End)
}

// HistoryEntry records one change of a subscription: who, when, what.
type HistoryEntry struct {
	VersionID uint64    `json:"versionId"`
	At        time.Time `json:"at"`
	Actor     string    `json:"actor"`
	Action    Action    `json:"action"`
	From      Status    `json:"from,omitempty"`
	To        Status    `json:"to,omitempty"`
	Note      string    `json:"note,omitempty"`
}

// Action names what a change did.
type Action string

// Actions recorded in the history.
const (
	ActionCreate Action = "create"
	ActionUpdate Action = "update"
	ActionStatus Action = "status"
	ActionDelete Action = "delete"
)

// Op is the kind of a change record.
type Op uint8

// Change record operations.
const (
	OpPut    Op = 1 // store Subscription as the new state of ID
	OpDelete Op = 2 // remove ID
)

// Change is one write to the store, complete enough to replay: the store
// applies its own writes through exactly this record, so a follower fed the
// same ordered records from a replicated log ends in the same state. Seq is
// the position in that order; a record at or below the store's current
// sequence is already applied and skipped.
type Change struct {
	Seq          uint64        `json:"seq"`
	Op           Op            `json:"op"`
	ID           string        `json:"id"`
	Subscription *Subscription `json:"subscription,omitempty"`
	History      HistoryEntry  `json:"history"`
}

// Errors the store reports; callers test with errors.Is / errors.As.
var (
	ErrNotFound = fmt.Errorf("subscription not found")
	// ErrVersionConflict: the caller's expected versionId is stale.
	ErrVersionConflict = fmt.Errorf("subscription version conflict")
	// ErrTransition: the status change is not a lifecycle step.
	ErrTransition = fmt.Errorf("status change not allowed")
)

// DuplicateError says a create matched an existing subscription.
type DuplicateError struct{ ExistingID string }

func (e *DuplicateError) Error() string {
	return "duplicate of subscription " + e.ExistingID
}

// odsURLPrefix is the form of the first contact's value: the ODS code
// follows it.
const odsURLPrefix = "https://directory.spineservices.nhs.uk/STU3/Organization/"
