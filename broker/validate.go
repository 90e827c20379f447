package broker

import (
	"fmt"
	"strings"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
)

// Extension and code-system URLs of the Event-MessageHeader-1 model
// (publish.md §4.2).
const (
	routingDemographicsURL  = "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-RoutingDemographics-1"
	messageEventTypeURL     = "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-MessageEventType-1"
	legacyMessageEventType  = "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-EMS-MessageEventType-1"
	legacyEventTypeSystem   = "https://fhir.nhs.uk/STU3/CodeSystem/EMS-EventType-1"
	odsDirectoryOrgURL      = "https://directory.spineservices.nhs.uk/STU3/Organization/"
	zeroWidthSpace          = "\u200b"
	messageHeaderTypeString = "MessageHeader"
)

// Message is what validation learned about a message it accepted.
type Message struct {
	ID               string // MessageHeader.id, the JetStream de-duplication key
	Event            catalog.Event
	MessageEventType string // new, update or delete
	NHSNumber        string // routing NHS number; "" for a birth notification without a mother
}

// ProfileValidator checks every resource of a bundle against the profiles the
// event requires. It is optional: the generic rules stand on their own.
type ProfileValidator interface {
	ValidateBundle(root *fhir.Node, eventCode string) []fhir.Issue
}

// ProfileValidatorFunc adapts a function to ProfileValidator.
type ProfileValidatorFunc func(root *fhir.Node, eventCode string) []fhir.Issue

// ValidateBundle calls f.
func (f ProfileValidatorFunc) ValidateBundle(root *fhir.Node, eventCode string) []fhir.Issue {
	return f(root, eventCode)
}

// Validator applies the generic event-message rules of publish.md §4 and the
// per-event bundle contents of events.md §3 to a parsed bundle.
type Validator struct {
	Catalog *catalog.Catalog
	// CheckNHSNumber enforces the Modulus 11 check digit. Only test
	// environments turn it off: a wrong NHS number routes a child's record
	// to the wrong subscribers.
	CheckNHSNumber bool
	// Profiles, when set, adds profile validation of every resource.
	Profiles ProfileValidator
	// MaxIssues caps the issues reported for one message (zero: 100).
	MaxIssues int
}

// checker accumulates the issues of one validation run.
type checker struct {
	issues []fhir.Issue
}

func (c *checker) fail(code fhir.SpineCode, at fhir.Path, format string, args ...any) {
	c.issues = append(c.issues, fhir.Issue{Severity: fhir.SeverityError, Code: code, Expression: at.String(), Diagnostics: fmt.Sprintf(format, args...)})
}

func (c *checker) warn(code fhir.SpineCode, at fhir.Path, format string, args ...any) {
	c.issues = append(c.issues, fhir.Issue{Severity: fhir.SeverityWarning, Code: code, Expression: at.String(), Diagnostics: fmt.Sprintf(format, args...)})
}

// Validate checks a parsed bundle. It reports every failure it finds rather
// than stopping at the first, so that a publisher can fix a message in one
// round trip; the returned Message is only meaningful when no issue is an
// error.
func (v *Validator) Validate(root *fhir.Node) (Message, []fhir.Issue) {
	c := &checker{}
	msg := v.validate(c, root)
	return msg, capIssues(c.issues, v.MaxIssues)
}

func (v *Validator) validate(c *checker, root *fhir.Node) Message {
	var msg Message
	if root == nil || root.ResourceType != "Bundle" {
		name := "nothing"
		if root != nil {
			name = root.ResourceType
		}
		c.fail(fhir.MessageNotWellFormed, "", "the body must be a FHIR Bundle, found %s", name)
		return msg
	}
	if t := root.Child("type"); t == nil {
		c.fail(fhir.InvalidResource, "Bundle.type", "Bundle.type is required and must be 'message'")
	} else if t.Value != "message" {
		c.fail(fhir.InvalidResource, "Bundle.type", "Bundle.type must be 'message', found %q", t.Value)
	}
	b := indexBundle(root)
	if len(b.entries) == 0 {
		c.fail(fhir.InvalidResource, "Bundle.entry", "a message bundle must contain the MessageHeader as its first entry")
		return msg
	}
	v.checkEntries(c, b)

	header := b.entries[0].resource
	if header == nil || header.ResourceType != messageHeaderTypeString {
		found := "no resource"
		if header != nil {
			found = header.ResourceType
		}
		c.fail(fhir.InvalidResource, b.entries[0].at, "the first entry of a message bundle must be the MessageHeader, found %s", found)
		return msg
	}
	for _, e := range b.resourcesOfType(messageHeaderTypeString)[1:] {
		c.fail(fhir.InvalidResource, e.at, "a message bundle carries exactly one MessageHeader; this is another")
	}
	h := &headerCheck{checker: c, v: v, b: b, node: header, at: b.entries[0].at}
	msg = h.run()
	if msg.Event.Code == "" {
		return msg
	}
	rules := rulesByEvent[msg.Event.Code]
	v.checkPatients(c, b, h, rules)
	if rules != nil {
		checkContents(c, b, msg, rules)
	}
	checkDateTimes(c, root)
	if v.Profiles != nil && !hasErrors(c.issues) {
		// Profile validation runs on a message whose NEMS structure holds:
		// its findings on a broken message would mostly restate the
		// broker's, under less specific codes.
		for _, is := range v.Profiles.ValidateBundle(root, msg.Event.Code) {
			if !alreadyReported(c, fhir.Path(is.Expression)) {
				c.issues = append(c.issues, is)
			}
		}
	}
	return msg
}

// checkEntries applies the Bundle.entry rules: one resource each, a fullUrl
// that references can resolve against, no two entries with the same one.
func (v *Validator) checkEntries(c *checker, b *bundle) {
	seen := map[string]int{}
	for _, e := range b.entries {
		entryAt := fhir.Path("Bundle").Index("entry", e.index)
		if e.resource == nil {
			c.fail(fhir.InvalidResource, entryAt.Field("resource"), "every entry of a message bundle must carry a resource")
		}
		switch {
		case e.fullURL == "":
			c.fail(fhir.InvalidResource, entryAt.Field("fullUrl"), "entry.fullUrl is required in a message bundle (urn:uuid:<uuid>) so that references can be resolved")
		case strings.HasPrefix(e.fullURL, "urn:uuid:"):
			if !looksLikeUUID(strings.TrimPrefix(e.fullURL, "urn:uuid:")) {
				c.fail(fhir.InvalidResource, entryAt.Field("fullUrl"), "fullUrl %q is not a valid urn:uuid", e.fullURL)
			}
		case looksLikeUUID(e.fullURL):
			// Two official PDS examples carry a bare uuid; NEMS accepts them.
			c.warn(fhir.InvalidResource, entryAt.Field("fullUrl"), "fullUrl %q should be written urn:uuid:%s", e.fullURL, e.fullURL)
		case !strings.Contains(e.fullURL, ":"):
			c.fail(fhir.InvalidResource, entryAt.Field("fullUrl"), "fullUrl %q must be an absolute URI (urn:uuid:<uuid>)", e.fullURL)
		}
		if e.fullURL != "" {
			if first, dup := seen[e.fullURL]; dup {
				c.fail(fhir.InvalidResource, entryAt.Field("fullUrl"), "fullUrl %q is already used by Bundle.entry[%d]", e.fullURL, first)
			} else {
				seen[e.fullURL] = e.index
			}
		}
	}
}

// headerCheck validates the MessageHeader (publish.md §4.2).
type headerCheck struct {
	*checker
	v    *Validator
	b    *bundle
	node *fhir.Node
	at   fhir.Path

	routingNHS   string
	routingNHSAt fhir.Path
}

func (h *headerCheck) run() Message {
	var msg Message
	msg.ID = h.checkID()
	ev, ok := h.checkEvent()
	if !ok {
		// Without a known event the per-event rules cannot be chosen;
		// the structural checks below still run so that the publisher
		// sees every fault at once.
		h.checkStructure(nil, catalog.Event{}, "")
		return msg
	}
	msg.Event = ev
	msg.MessageEventType = h.checkMessageEventType(ev)
	rules := rulesByEvent[ev.Code]
	h.checkStructure(rules, ev, msg.MessageEventType)
	msg.NHSNumber = h.checkRouting(rules, msg.MessageEventType)
	return msg
}

func (h *headerCheck) checkID() string {
	id := h.node.Child("id")
	switch {
	case id == nil || id.Value == "":
		h.fail(fhir.InvalidResource, h.at.Field("id"), "MessageHeader.id is required: it identifies the message for support and duplicate detection")
		return ""
	case !looksLikeUUID(id.Value):
		h.fail(fhir.InvalidResource, h.at.Field("id"), "MessageHeader.id must be a UUID, found %q", id.Value)
		return ""
	}
	return strings.ToLower(id.Value)
}

func (h *headerCheck) checkEvent() (catalog.Event, bool) {
	at := h.at.Field("event")
	event := h.node.Child("event")
	if event == nil {
		h.fail(fhir.InvalidResource, at, "MessageHeader.event is required")
		return catalog.Event{}, false
	}
	system, code := event.Str("system"), event.Str("code")
	switch system {
	case catalog.EventTypeSystem:
	case legacyEventTypeSystem:
		h.fail(fhir.InvalidCodeSystem, at.Field("system"), "event system %s belongs to the withdrawn EMS-MessageHeader-1 model; use %s", system, catalog.EventTypeSystem)
		return catalog.Event{}, false
	default:
		h.fail(fhir.InvalidCodeSystem, at.Field("system"), "MessageHeader.event.system must be %s, found %q", catalog.EventTypeSystem, system)
		return catalog.Event{}, false
	}
	if event.Child("userSelected") != nil {
		h.fail(fhir.InvalidElement, at.Field("userSelected"), "MessageHeader.event.userSelected must not be present")
	}
	if strings.Contains(code, zeroWidthSpace) {
		h.fail(fhir.InvalidCodeValue, at.Field("code"), "event code %q contains a zero-width space (U+200B); remove it", strings.ReplaceAll(code, zeroWidthSpace, "<U+200B>"))
		return catalog.Event{}, false
	}
	ev, known := h.v.Catalog.Lookup(code)
	switch {
	case code == "":
		h.fail(fhir.InvalidResource, at.Field("code"), "MessageHeader.event.code is required")
		return catalog.Event{}, false
	case !known:
		h.fail(fhir.InvalidCodeValue, at.Field("code"), "event code %q is not in the EventType-1 CodeSystem", code)
		return catalog.Event{}, false
	case !ev.Enabled:
		h.fail(fhir.InvalidCodeValue, at.Field("code"), "event type %s (%s) is not supported by this service", code, ev.Display)
		return catalog.Event{}, false
	case ev.State == catalog.Withdrawn:
		h.fail(fhir.Withdrawn, at.Field("code"), "event type %s (%s) has been withdrawn and can no longer be published", code, ev.Display)
		return catalog.Event{}, false
	}
	if d := event.Child("display"); d == nil || d.Value == "" {
		h.fail(fhir.InvalidResource, at.Field("display"), "MessageHeader.event.display is required (%q)", ev.Display)
	} else if d.Value != ev.Display {
		h.warn(fhir.InvalidCodeValue, at.Field("display"), "display for %s should be %q, found %q", code, ev.Display, d.Value)
	}
	return ev, true
}

func (h *headerCheck) checkMessageEventType(ev catalog.Event) string {
	exts := h.extensionsAt(messageEventTypeURL)
	if len(exts) == 0 {
		if legacy := h.extensionsAt(legacyMessageEventType); len(legacy) > 0 {
			h.fail(fhir.InvalidResource, legacy[0].at, "Extension-EMS-MessageEventType-1 belongs to the withdrawn EMS model; use %s", messageEventTypeURL)
		} else {
			h.fail(fhir.InvalidResource, h.at.Field("extension"), "the messageEventType extension (%s) is required", messageEventTypeURL)
		}
		return ""
	}
	for _, extra := range exts[1:] {
		h.fail(fhir.InvalidResource, extra.at, "the messageEventType extension may appear only once")
	}
	ext := exts[0]
	cc := ext.node.Child("valueCodeableConcept")
	if cc == nil {
		h.fail(fhir.InvalidResource, ext.at.Field("valueCodeableConcept"), "the messageEventType extension needs a valueCodeableConcept")
		return ""
	}
	codings := cc.ChildrenNamed("coding")
	if len(codings) != 1 {
		h.fail(fhir.InvalidResource, ext.at.Field("valueCodeableConcept").Field("coding"), "messageEventType needs exactly one coding, found %d", len(codings))
		if len(codings) == 0 {
			return ""
		}
	}
	codingAt := ext.at.Field("valueCodeableConcept").Index("coding", 0)
	system, code := codings[0].Str("system"), codings[0].Str("code")
	if system != catalog.MessageEventTypeSystem {
		h.fail(fhir.InvalidCodeSystem, codingAt.Field("system"), "messageEventType system must be %s, found %q", catalog.MessageEventTypeSystem, system)
	}
	switch code {
	case "new", "update", "delete":
	default:
		h.fail(fhir.InvalidCodeValue, codingAt.Field("code"), "messageEventType must be new, update or delete, found %q", code)
		return ""
	}
	if !ev.AllowsMessageEventType(code) {
		h.fail(fhir.InvalidCodeValue, codingAt.Field("code"), "messageEventType %q is not allowed for %s, which allows %s", code, ev.Code, strings.Join(ev.MessageEventTypes, ", "))
	}
	return code
}

// checkStructure applies the MessageHeader element rules that do not depend
// on the routing demographics.
func (h *headerCheck) checkStructure(rules *eventRules, ev catalog.Event, messageEventType string) {
	meta := h.node.Child("meta")
	if lu := meta.Child("lastUpdated"); lu == nil {
		if rules != nil && !rules.lastUpdatedOptional {
			h.fail(fhir.InvalidResource, h.at.Field("meta").Field("lastUpdated"), "MessageHeader.meta.lastUpdated is required for %s: receivers order events by it", ev.Code)
		}
	} else if p := fhir.DateTimeProblem(lu.Value, true); p != "" {
		h.fail(fhir.InvalidValue, h.at.Field("meta").Field("lastUpdated"), "meta.lastUpdated %q %s", lu.Value, p)
	}
	if ts := h.node.Child("timestamp"); ts == nil {
		h.fail(fhir.InvalidResource, h.at.Field("timestamp"), "MessageHeader.timestamp is required")
	} else if p := fhir.DateTimeProblem(ts.Value, true); p != "" {
		h.fail(fhir.InvalidValue, h.at.Field("timestamp"), "timestamp %q %s", ts.Value, p)
	}
	h.checkSource()
	for _, name := range []string{"receiver", "author", "reason", "response"} {
		if h.node.Child(name) != nil {
			h.fail(fhir.InvalidElement, h.at.Field(name), "MessageHeader.%s must not be present in an event message", name)
		}
	}
	h.checkResponsible(ev)
	h.checkFocus(ev)
}

func (h *headerCheck) checkSource() {
	at := h.at.Field("source")
	src := h.node.Child("source")
	if src == nil {
		h.fail(fhir.InvalidResource, at, "MessageHeader.source is required")
		return
	}
	if src.Child("endpoint") == nil {
		h.fail(fhir.InvalidResource, at.Field("endpoint"), "MessageHeader.source.endpoint is required")
	}
	contact := src.Child("contact")
	switch {
	case contact == nil:
		h.fail(fhir.InvalidResource, at.Field("contact"), "MessageHeader.source.contact is required: subscribers use it to raise issues about the message")
	case contact.Str("system") != "phone" && contact.Str("system") != "email":
		h.fail(fhir.InvalidResource, at.Field("contact").Field("system"), "source.contact.system must be phone or email, found %q", contact.Str("system"))
	case contact.Str("value") == "":
		h.fail(fhir.InvalidResource, at.Field("contact").Field("value"), "source.contact.value is required")
	}
	if src.Child("name") == nil {
		// NEMS requires it, but most official examples omit it and the
		// live service accepts them (publish.md §4.2, ambiguity).
		h.warn(fhir.InvalidResource, at.Field("name"), "MessageHeader.source.name should name the sending system")
	}
}

func (h *headerCheck) checkResponsible(ev catalog.Event) {
	at := h.at.Field("responsible")
	r := h.node.Child("responsible")
	if r == nil {
		h.fail(fhir.InvalidResource, at, "MessageHeader.responsible is required: the organisation responsible for the event")
		return
	}
	ref := r.Str("reference")
	if ref == "" {
		h.fail(fhir.InvalidResource, at.Field("reference"), "MessageHeader.responsible.reference is required")
		return
	}
	if ods, ok := strings.CutPrefix(ref, odsDirectoryOrgURL); ok && ods != "" {
		return
	}
	e := h.b.resolve(ref)
	if e == nil || e.resource == nil {
		if ev.Code != "" && !ev.Publishable {
			// Events only Spine publishes (PDS) come from the national
			// source of truth, and the official birth notification points
			// responsible at an organisation it does not carry; we accept
			// that from Spine and refuse it from everyone else.
			h.warn(fhir.ReferenceNotFound, at.Field("reference"), "responsible %q does not resolve to an entry of the bundle or an ODS directory URL", ref)
			return
		}
		h.fail(fhir.ReferenceNotFound, at.Field("reference"), "responsible %q does not resolve to an entry of the bundle or an ODS directory URL", ref)
		return
	}
	if t := e.resource.ResourceType; t != "Organization" && t != "Practitioner" {
		h.fail(fhir.InvalidResource, at.Field("reference"), "responsible must reference an Organization or Practitioner, found %s", t)
	}
}

func (h *headerCheck) checkFocus(ev catalog.Event) {
	at := h.at.Field("focus")
	f := h.node.Child("focus")
	if f == nil {
		h.fail(fhir.InvalidResource, at, "MessageHeader.focus is required")
		return
	}
	ref := f.Str("reference")
	if ref == "" {
		h.fail(fhir.InvalidResource, at.Field("reference"), "MessageHeader.focus.reference is required")
		return
	}
	e := h.b.resolve(ref)
	if e == nil || e.resource == nil {
		h.fail(fhir.ReferenceNotFound, at.Field("reference"), "focus %q does not resolve to an entry of the bundle", ref)
		return
	}
	if ev.Focus != "" && e.resource.ResourceType != ev.Focus {
		h.fail(fhir.InvalidResource, at.Field("reference"), "focus of %s must be the %s, found %s", ev.Code, ev.Focus, e.resource.ResourceType)
	}
}

// checkRouting validates the routingDemographics extension and returns the
// routing NHS number.
func (h *headerCheck) checkRouting(rules *eventRules, messageEventType string) string {
	optional := rules != nil && rules.routingOptional
	exts := h.extensionsAt(routingDemographicsURL)
	if len(exts) == 0 {
		if !optional {
			h.fail(fhir.InvalidResource, h.at.Field("extension"), "the routingDemographics extension (%s) is required: events are routed on it", routingDemographicsURL)
		}
		return ""
	}
	for _, extra := range exts[1:] {
		h.fail(fhir.InvalidResource, extra.at, "the routingDemographics extension may appear only once")
	}
	ext := exts[0]
	partOptional := optional || (rules != nil && rules.screening && messageEventType == "delete")
	parts := map[string][]located{}
	for i, sub := range ext.node.ChildrenNamed("extension") {
		url := sub.Str("url")
		parts[url] = append(parts[url], located{sub, ext.at.Index("extension", i)})
	}
	for url, l := range parts {
		switch url {
		case "nhsNumber", "name", "birthDateTime":
			for _, extra := range l[1:] {
				h.fail(fhir.InvalidResource, extra.at, "routingDemographics.%s may appear only once", url)
			}
		default:
			h.fail(fhir.InvalidResource, l[0].at.Field("url"), "routingDemographics has no part %q (nhsNumber, name, birthDateTime)", url)
		}
	}
	nhs := ""
	if l := parts["nhsNumber"]; len(l) == 0 {
		if !optional {
			h.fail(fhir.InvalidResource, ext.at.Field("extension"), "routingDemographics.nhsNumber is required")
		}
	} else if id := l[0].node.Child("valueIdentifier"); id == nil {
		h.fail(fhir.InvalidResource, l[0].at.Field("valueIdentifier"), "routingDemographics.nhsNumber needs a valueIdentifier")
	} else {
		idAt := l[0].at.Field("valueIdentifier")
		if sys := id.Str("system"); sys != fhir.NHSNumberSystem {
			h.fail(fhir.InvalidIdentifierSystem, idAt.Field("system"), "routing NHS number system must be %s, found %q", fhir.NHSNumberSystem, sys)
		}
		nhs = id.Str("value")
		if !h.checkNHSNumber(nhs, idAt.Field("value"), "routing NHS number") {
			nhs = ""
		}
		h.routingNHS, h.routingNHSAt = nhs, idAt.Field("value")
	}
	if l := parts["name"]; len(l) == 0 {
		if !partOptional {
			h.fail(fhir.InvalidResource, ext.at.Field("extension"), "routingDemographics.name is required")
		}
	} else if l[0].node.Child("valueHumanName") == nil {
		h.fail(fhir.InvalidResource, l[0].at.Field("valueHumanName"), "routingDemographics.name needs a valueHumanName")
	}
	if l := parts["birthDateTime"]; len(l) == 0 {
		if !partOptional {
			h.fail(fhir.InvalidResource, ext.at.Field("extension"), "routingDemographics.birthDateTime is required")
		}
	} else if dt := l[0].node.Child("valueDateTime"); dt == nil {
		h.fail(fhir.InvalidResource, l[0].at.Field("valueDateTime"), "routingDemographics.birthDateTime needs a valueDateTime")
	} else if p := fhir.DateTimeProblem(dt.Value, false); p != "" {
		h.fail(fhir.InvalidValue, l[0].at.Field("valueDateTime"), "birthDateTime %q %s", dt.Value, p)
	}
	return nhs
}

// checkNHSNumber reports a malformed NHS number. With the check digit
// relaxed (test environments only) the value must still be ten digits: it
// becomes a subject token.
func (h *headerCheck) checkNHSNumber(value string, at fhir.Path, what string) bool {
	return checkNHSNumber(h.checker, h.v.CheckNHSNumber, value, at, what)
}

func checkNHSNumber(c *checker, strict bool, value string, at fhir.Path, what string) bool {
	p := fhir.NHSNumberProblem(value)
	if p == "" || (!strict && len(value) == 10 && strings.Trim(value, "0123456789") == "") {
		return true
	}
	c.fail(fhir.InvalidNHSNumber, at, "%s %q %s", what, value, p)
	return false
}

type located struct {
	node *fhir.Node
	at   fhir.Path
}

func (h *headerCheck) extensionsAt(url string) []located {
	var out []located
	for i, e := range h.node.ChildrenNamed("extension") {
		if e.Str("url") == url {
			out = append(out, located{e, h.at.Index("extension", i)})
		}
	}
	return out
}

// patientRefs names, for each focus resource type, the element that points at
// the patient the event is about.
var patientRefs = map[string]string{
	"Encounter":          "subject",
	"Communication":      "subject",
	"Immunization":       "patient",
	"EpisodeOfCare":      "patient",
	"AllergyIntolerance": "patient",
	"Observation":        "subject",
	"Task":               "for",
	"Condition":          "subject",
	"Procedure":          "subject",
}

// checkPatients validates the NHS number of every Patient and that the
// routing NHS number is the NHS number of the patient the focus is about.
func (v *Validator) checkPatients(c *checker, b *bundle, h *headerCheck, rules *eventRules) {
	nhsOf := map[*fhir.Node]string{}
	for _, e := range b.resourcesOfType("Patient") {
		for i, id := range e.resource.ChildrenNamed("identifier") {
			if id.Str("system") != fhir.NHSNumberSystem {
				continue
			}
			value := id.Str("value")
			if checkNHSNumber(c, v.CheckNHSNumber, value, e.at.Index("identifier", i).Field("value"), "Patient NHS number") {
				if _, seen := nhsOf[e.resource]; !seen {
					nhsOf[e.resource] = value
				}
			}
		}
	}
	if h.routingNHS == "" {
		return
	}
	patient := focusPatient(b, h.node)
	if patient == nil {
		return
	}
	if nhs, ok := nhsOf[patient]; ok && nhs != h.routingNHS {
		c.fail(fhir.ConflictingValues, h.routingNHSAt, "routing NHS number %s differs from the NHS number %s of the patient the event is about", h.routingNHS, nhs)
	}
}

// focusPatient returns the Patient the message is about: the focus itself
// when it is a Patient, else the patient its subject/patient element points at.
func focusPatient(b *bundle, header *fhir.Node) *fhir.Node {
	e := b.resolve(header.Str("focus", "reference"))
	if e == nil || e.resource == nil {
		return nil
	}
	if e.resource.ResourceType == "Patient" {
		return e.resource
	}
	field, ok := patientRefs[e.resource.ResourceType]
	if !ok {
		return nil
	}
	p := b.resolve(e.resource.Str(field, "reference"))
	if p == nil || p.resource == nil || p.resource.ResourceType != "Patient" {
		return nil
	}
	return p.resource
}

// checkContents applies the per-event resource counts of events.md §3.
func checkContents(c *checker, b *bundle, msg Message, rules *eventRules) {
	allowed := rules.contentsFor(msg.MessageEventType)
	if allowed == nil {
		return
	}
	counts := map[string]int{}
	for _, e := range b.entries {
		if e.resource != nil {
			counts[e.resource.ResourceType]++
		}
	}
	known := map[string]bool{}
	for _, a := range allowed {
		known[a.resource] = true
		n := counts[a.resource]
		if n < a.min || (a.max != many && n > a.max) {
			c.fail(fhir.InvalidResource, "Bundle.entry", "a %s %s message carries %s %s, found %d", msg.Event.Code, orAny(msg.MessageEventType), cardinality(a), a.resource, n)
		}
	}
	for _, e := range b.entries {
		if e.resource != nil && !known[e.resource.ResourceType] {
			c.fail(fhir.InvalidResource, e.at, "a %s message does not carry a %s resource", msg.Event.Code, e.resource.ResourceType)
		}
	}
}

func orAny(messageEventType string) string {
	if messageEventType == "" {
		return "event"
	}
	return messageEventType
}

func cardinality(a count) string {
	switch {
	case a.max == many:
		return fmt.Sprintf("at least %d", a.min)
	case a.min == a.max:
		return fmt.Sprintf("exactly %d", a.min)
	default:
		return fmt.Sprintf("%d to %d", a.min, a.max)
	}
}

// checkDateTimes checks the zone offset of every dateTime and instant in the
// bundle (publish.md §4.5), finding them by their STU3 element types. The
// walk builds no location strings unless it has something to report: it
// runs on every message.
func checkDateTimes(c *checker, root *fhir.Node) {
	t := fhir.LookupType(root.ResourceType)
	if t == nil {
		return
	}
	w := dateTimeWalk{c: c, stack: make([]*fhir.Node, 0, 16)}
	w.stack = append(w.stack, root)
	w.walk(root, t)
}

type dateTimeWalk struct {
	c     *checker
	stack []*fhir.Node // root ... current node
}

func (w *dateTimeWalk) walk(n *fhir.Node, t *fhir.Type) {
	for _, ch := range n.Children {
		def, ok := t.Child(ch.Name)
		if !ok || def.Type == nil {
			continue // unknown elements are the parser's business
		}
		w.stack = append(w.stack, ch)
		switch {
		case def.Type.Kind == fhir.KindContainer:
			if r := ch.Resource(); r != nil {
				if rt := fhir.LookupType(r.ResourceType); rt != nil {
					w.stack = append(w.stack, r)
					w.walk(r, rt)
					w.stack = w.stack[:len(w.stack)-1]
				}
			}
		case def.Type.Name == "dateTime" || def.Type.Name == "instant":
			if ch.HasValue {
				if p := fhir.DateTimeProblem(ch.Value, def.Type.Name == "instant"); p != "" {
					at := w.path()
					if !alreadyReported(w.c, at) {
						w.c.fail(fhir.InvalidValue, at, "%s %q %s", def.Type.Name, ch.Value, p)
					}
				}
			}
		default:
			if len(ch.Children) > 0 {
				w.walk(ch, def.Type)
			}
		}
		w.stack = w.stack[:len(w.stack)-1]
	}
}

// path renders the location of the top of the stack: repeating elements
// (by their STU3 definition) get an index, a resource inside its container
// adds nothing.
func (w *dateTimeWalk) path() fhir.Path {
	at := fhir.Path(w.stack[0].ResourceType)
	t := fhir.LookupType(w.stack[0].ResourceType)
	for i := 1; i < len(w.stack); i++ {
		parent, n := w.stack[i-1], w.stack[i]
		if n.ResourceType != "" && parent.Resource() == n {
			t = fhir.LookupType(n.ResourceType)
			continue
		}
		def, _ := t.Child(n.Name)
		if def.Element != nil && def.Element.Repeats() {
			at = at.Index(n.Name, parent.IndexOf(n))
		} else {
			at = at.Field(n.Name)
		}
		t = def.Type
	}
	return at
}

// capIssues keeps at most max issues (errors first, in order) and says how
// many were left out.
func capIssues(issues []fhir.Issue, max int) []fhir.Issue {
	if max <= 0 {
		max = 100
	}
	if len(issues) <= max {
		return issues
	}
	out := make([]fhir.Issue, 0, max+1)
	for _, i := range issues {
		if i.IsError() && len(out) < max {
			out = append(out, i)
		}
	}
	for _, i := range issues {
		if !i.IsError() && len(out) < max {
			out = append(out, i)
		}
	}
	out = append(out, fhir.Issue{Severity: fhir.SeverityInformation, Code: fhir.InvalidResource, IssueType: "informational",
		Diagnostics: fmt.Sprintf("%d further issues were not reported (limit %d)", len(issues)-max, max)})
	return out
}

func alreadyReported(c *checker, at fhir.Path) bool {
	for _, i := range c.issues {
		if i.Expression == at.String() {
			return true
		}
	}
	return false
}

func hasErrors(issues []fhir.Issue) bool {
	for _, i := range issues {
		if i.IsError() {
			return true
		}
	}
	return false
}
