// Package catalog is the table of event types the service knows: every code
// of the EventType-1 CodeSystem with its display, the publish interaction
// code, the MESH WorkflowID, whether it may be published and subscribed to,
// which messageEventType values it allows, its focus resource and its
// lifecycle state (events.md §2, §4, §5; publish.md §5).
//
// The table is data, not code: publish validation, subscription criteria and
// delivery all read it, and a deployment overrides lifecycle states and
// enables draft events through configuration (see Catalog.Apply).
package catalog

import (
	"fmt"
	"sort"
	"time"
)

// EventTypeSystem is the code system of MessageHeader.event and of
// MessageHeader.event in subscription criteria.
const EventTypeSystem = "https://fhir.nhs.uk/STU3/CodeSystem/EventType-1"

// MessageEventTypeSystem is the code system of the messageEventType extension.
const MessageEventTypeSystem = "https://fhir.nhs.uk/STU3/CodeSystem/MessageEventType-1"

// State is an event type's lifecycle state (publish.md §5).
type State string

// Lifecycle states.
const (
	Active            State = "active"
	Deprecated        State = "deprecated"
	NoLongerSupported State = "no-longer-supported"
	Withdrawn         State = "withdrawn"
)

// Tier says how far the event got towards national support.
type Tier string

// Tiers: supported events are enabled by default; draft (NEMS branch) and DCH
// catalogue events exist in EventType-1 but are rejected as not supported
// unless a deployment enables them.
const (
	Supported Tier = "supported"
	Draft     Tier = "draft"
	DCH       Tier = "dch"
	Legacy    Tier = "legacy"
)

// Event is one event type.
type Event struct {
	Code    string // EventType-1 code, e.g. "vaccinations-1"
	Display string // EventType-1 display
	// PublishCode is the {X} of InteractionID
	// urn:nhs:names:services:events:{X}.Write; empty when only Spine
	// publishes the event (PDS events).
	PublishCode  string
	WorkflowID   string // MESH Mex-WorkflowID
	Publishable  bool   // may be published through the API
	Subscribable bool
	// MessageEventTypes lists the allowed messageEventType codes.
	MessageEventTypes []string
	// Focus is the resource type MessageHeader.focus must point at.
	Focus string
	Tier  Tier
	// Enabled events are accepted; others are rejected as not supported.
	Enabled bool
	State   State
	// DeprecationDate and InfoURL feed the DEPRECATED warning text.
	DeprecationDate time.Time
	InfoURL         string
}

// AllowsMessageEventType reports whether code is allowed for this event.
func (e Event) AllowsMessageEventType(code string) bool {
	for _, c := range e.MessageEventTypes {
		if c == code {
			return true
		}
	}
	return false
}

// DeprecationText is the diagnostics of a DEPRECATED or NO_LONGER_SUPPORTED
// issue, in the wording of the NEMS examples.
func (e Event) DeprecationText() string {
	date := "a date to be announced"
	if !e.DeprecationDate.IsZero() {
		date = e.DeprecationDate.Format("02/01/2006")
	}
	url := e.InfoURL
	if url == "" {
		url = "https://digital.nhs.uk/services/national-events-management-service"
	}
	return fmt.Sprintf("Deprecation of the %s (%s) event type will occur on %s, for more information go to %s", e.Display, e.Code, date, url)
}

// Catalog is an immutable set of event types.
type Catalog struct {
	byCode map[string]Event
}

// Lookup returns the event with the given code.
func (c *Catalog) Lookup(code string) (Event, bool) {
	e, ok := c.byCode[code]
	return e, ok
}

// All returns every event, sorted by code.
func (c *Catalog) All() []Event {
	out := make([]Event, 0, len(c.byCode))
	for _, e := range c.byCode {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Code < out[j].Code })
	return out
}

// Override changes one event's deployment settings; zero fields keep the
// default.
type Override struct {
	Enabled         *bool
	State           State
	DeprecationDate time.Time
	InfoURL         string
}

// Apply returns a copy of the catalogue with the overrides applied. An
// override naming an unknown code is an error, so that a typo in
// configuration is not silently ignored.
func (c *Catalog) Apply(overrides map[string]Override) (*Catalog, error) {
	out := &Catalog{byCode: make(map[string]Event, len(c.byCode))}
	for k, v := range c.byCode {
		out.byCode[k] = v
	}
	for code, o := range overrides {
		e, ok := out.byCode[code]
		if !ok {
			return nil, fmt.Errorf("event %q: not an EventType-1 code", code)
		}
		if o.Enabled != nil {
			e.Enabled = *o.Enabled
		}
		switch o.State {
		case "":
		case Active, Deprecated, NoLongerSupported, Withdrawn:
			e.State = o.State
		default:
			return nil, fmt.Errorf("event %q: state %q is not one of active, deprecated, no-longer-supported, withdrawn", code, o.State)
		}
		if !o.DeprecationDate.IsZero() {
			e.DeprecationDate = o.DeprecationDate
		}
		if o.InfoURL != "" {
			e.InfoURL = o.InfoURL
		}
		out.byCode[code] = e
	}
	return out, nil
}

// Default returns the built-in catalogue: the ten supported NEMS events
// enabled and active, every other EventType-1 code known but disabled.
func Default() *Catalog {
	c := &Catalog{byCode: make(map[string]Event, len(defaultEvents))}
	for _, e := range defaultEvents {
		c.byCode[e.Code] = e
	}
	return c
}
