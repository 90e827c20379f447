package subscription

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/catalog"
)

// ProfileURL is the EMS-Subscription-1 profile every subscription claims.
const ProfileURL = "https://fhir.nhs.uk/STU3/StructureDefinition/EMS-Subscription-1"

// subscriptionElements are the STU3 Subscription elements, in definition
// order; anything else at the top level is refused.
var subscriptionElements = map[string]bool{
	"id": true, "meta": true, "implicitRules": true, "language": true, "text": true, "contained": true,
	"extension": true, "modifierExtension": true, "status": true, "contact": true, "end": true,
	"reason": true, "criteria": true, "error": true, "channel": true, "tag": true,
}

// draft is a Subscription as a client sent it, checked for form but not yet
// for ownership or against the catalogue.
type draft struct {
	ID        string
	MetaSent  bool // meta.versionId or meta.lastUpdated present
	Status    Status
	Contacts  []Contact
	Owner     string
	Reason    string
	Criteria  Criteria
	CritText  string
	Channel   Channel
	End       time.Time
	EndText   string
	Extension bool
}

// readDraft checks a parsed Subscription resource against EMS-Subscription-1
// and the population rules of subscriptions.md §2 (all but the server-only
// fields and status, which depend on create vs update). Every problem is
// reported with its location.
func readDraft(root *fhir.Node, now time.Time, allowHTTPHooks bool) (*draft, *fhir.Outcome) {
	out := &fhir.Outcome{}
	if root == nil || root.ResourceType != "Subscription" {
		rt := ""
		if root != nil {
			rt = root.ResourceType
		}
		out.Error(fhir.MessageNotWellFormed, "", fmt.Sprintf("the body must be a Subscription resource, not %q", rt))
		return nil, out
	}
	d := &draft{}
	p := fhir.Path("Subscription")
	for _, c := range root.Children {
		if !subscriptionElements[c.Name] {
			out.Error(fhir.InvalidResource, p.Field(c.Name).String(), "Subscription has no element "+c.Name)
		}
	}
	d.ID = root.Str("id")
	if m := root.Child("meta"); m != nil && (m.Child("versionId") != nil || m.Child("lastUpdated") != nil) {
		d.MetaSent = true
	}
	if root.Child("modifierExtension") != nil {
		out.Error(fhir.InvalidResource, p.Field("modifierExtension").String(), "modifier extensions are not understood by this server")
	}
	for _, name := range []string{"error", "tag"} {
		if root.Child(name) != nil {
			out.Error(fhir.InvalidResource, p.Field(name).String(), "Subscription."+name+" must not be present (EMS-Subscription-1: 0..0)")
		}
	}
	for i, c := range root.ChildrenNamed("contained") {
		if r := c.Resource(); r == nil || r.ResourceType != "Provenance" {
			out.Error(fhir.InvalidResource, p.Index("contained", i).String(), "only a Provenance may be contained")
		}
	}
	d.Status = Status(root.Str("status"))
	if root.Child("status") == nil {
		out.Error(fhir.InvalidResource, p.Field("status").String(), "status is required")
	}

	contacts := root.ChildrenNamed("contact")
	if len(contacts) == 0 {
		out.Error(fhir.InvalidResource, p.Field("contact").String(), "at least one contact (the subscribing organisation) is required")
	}
	for i, c := range contacts {
		at := p.Index("contact", i)
		ct := Contact{System: c.Str("system"), Value: c.Str("value"), Use: c.Str("use")}
		for _, f := range []string{"system", "value", "use"} {
			if c.Child(f) == nil {
				out.Error(fhir.InvalidResource, at.Field(f).String(), "contact."+f+" is required")
			}
		}
		d.Contacts = append(d.Contacts, ct)
		if i > 0 {
			continue // further contacts are kept but not checked
		}
		if ct.System != "" && ct.System != "url" {
			out.Error(fhir.InvalidResource, at.Field("system").String(), fmt.Sprintf("the first contact's system must be url, not %q", ct.System))
		}
		if ct.Use != "" && ct.Use != "work" {
			out.Error(fhir.InvalidResource, at.Field("use").String(), fmt.Sprintf("the first contact's use must be work, not %q", ct.Use))
		}
		if ct.Value != "" {
			ods, ok := strings.CutPrefix(ct.Value, odsURLPrefix)
			if !ok || !validOrgCode(ods) {
				out.Error(fhir.InvalidIdentifierValue, at.Field("value").String(), fmt.Sprintf("the first contact's value must be %s{ODS code}, not %q", odsURLPrefix, ct.Value))
			} else {
				d.Owner = ods
			}
		}
	}

	d.Reason = root.Str("reason")
	if strings.TrimSpace(d.Reason) == "" {
		out.Error(fhir.InvalidResource, p.Field("reason").String(), "reason is required")
	}

	if e := root.Child("end"); e != nil {
		d.EndText = e.Value
		if prob := fhir.DateTimeProblem(e.Value, true); prob != "" {
			out.Error(fhir.InvalidValue, p.Field("end").String(), fmt.Sprintf("end %q is not a FHIR instant: %s", e.Value, prob))
		} else if t, err := time.Parse(time.RFC3339Nano, e.Value); err != nil {
			out.Error(fhir.InvalidValue, p.Field("end").String(), fmt.Sprintf("end %q: %v", e.Value, err))
		} else if !t.After(now) {
			out.Error(fhir.InvalidValue, p.Field("end").String(), fmt.Sprintf("end %s is not in the future", e.Value))
		} else {
			d.End = t.UTC()
		}
	}

	critAt := p.Field("criteria").String()
	if c := root.Child("criteria"); c == nil || c.Value == "" {
		out.Error(fhir.InvalidResource, critAt, "criteria is required")
	} else {
		d.CritText = c.Value
		crit, cerr := ParseCriteria(c.Value)
		if cerr != nil {
			out.Error(cerr.Code, critAt, cerr.Error())
		}
		d.Criteria = crit
	}

	ch := root.Child("channel")
	if ch == nil {
		out.Error(fhir.InvalidResource, p.Field("channel").String(), "channel is required")
		return d, out
	}
	cp := p.Field("channel")
	d.Channel = Channel{Type: ch.Str("type"), Endpoint: ch.Str("endpoint"), Payload: ch.Str("payload")}
	for _, h := range ch.ChildrenNamed("header") {
		d.Channel.Headers = append(d.Channel.Headers, h.Value)
	}
	switch d.Channel.Type {
	case ChannelMessage:
		if !validMailbox(d.Channel.Endpoint) {
			out.Error(fhir.InvalidIdentifierValue, cp.Field("endpoint").String(), fmt.Sprintf("a message channel's endpoint must be a MESH mailbox id (letters and digits, up to 20), not %q", d.Channel.Endpoint))
		}
	case ChannelRestHook:
		if prob := webhookProblem(d.Channel.Endpoint, allowHTTPHooks); prob != "" {
			out.Error(fhir.InvalidIdentifierValue, cp.Field("endpoint").String(), prob)
		}
		switch d.Channel.Payload {
		case "", "application/fhir+xml", "application/fhir+json":
		default:
			out.Error(fhir.InvalidResource, cp.Field("payload").String(), fmt.Sprintf("payload %q must be application/fhir+xml or application/fhir+json", d.Channel.Payload))
		}
	case "":
		out.Error(fhir.InvalidResource, cp.Field("type").String(), "channel.type is required")
	default:
		out.Error(fhir.InvalidCodeValue, cp.Field("type").String(), fmt.Sprintf("channel.type %q is not supported (message or rest-hook)", d.Channel.Type))
	}
	return d, out
}

func validMailbox(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func webhookProblem(s string, allowHTTP bool) string {
	u, err := url.Parse(s)
	switch {
	case err != nil || !u.IsAbs() || u.Host == "":
		return fmt.Sprintf("a rest-hook endpoint must be an absolute URL, not %q", s)
	case u.User != nil:
		return "a rest-hook endpoint must not carry credentials in the URL (use channel.header)"
	case u.Scheme == "https", u.Scheme == "http" && allowHTTP:
		return ""
	default:
		return fmt.Sprintf("a rest-hook endpoint must use https, not %q", u.Scheme)
	}
}

// checkEvents applies the catalogue: every criteria event must be known,
// enabled, subscribable and neither withdrawn nor no longer supported.
// Deprecated events are accepted with one DEPRECATED issue each.
func checkEvents(cat *catalog.Catalog, c Criteria, out *fhir.Outcome) {
	at := "Subscription.criteria"
	for _, code := range c.Events {
		ev, ok := cat.Lookup(code)
		switch {
		case !ok:
			out.Error(fhir.InvalidCodeValue, at, fmt.Sprintf("criteria component MessageHeader.event: %q is not an EventType-1 code", code))
		case !ev.Enabled:
			out.Error(fhir.InvalidCodeValue, at, fmt.Sprintf("criteria component MessageHeader.event: event type %s is not supported by this service", code))
		case !ev.Subscribable:
			out.Error(fhir.InvalidCodeValue, at, fmt.Sprintf("criteria component MessageHeader.event: event type %s cannot be subscribed to", code))
		case ev.State == catalog.Withdrawn:
			out.Error(fhir.Withdrawn, at, fmt.Sprintf("criteria component MessageHeader.event: event type %s has been withdrawn", code))
		case ev.State == catalog.NoLongerSupported:
			out.Add(fhir.Issue{Severity: fhir.SeverityFatal, Code: fhir.NoLongerSupported, Expression: at,
				Diagnostics: fmt.Sprintf("criteria component MessageHeader.event: event type %s is no longer supported", code)})
		case ev.State == catalog.Deprecated:
			out.Add(fhir.Issue{Severity: fhir.SeverityInformation, Code: fhir.Deprecated, Expression: at, Diagnostics: ev.DeprecationText()})
		}
	}
}

// toNode renders a stored subscription as an EMS-Subscription-1 resource,
// elements in STU3 order.
func toNode(s *Subscription) *fhir.Node {
	root := &fhir.Node{Name: "Subscription", ResourceType: "Subscription"}
	add := func(n *fhir.Node) { root.Children = append(root.Children, n) }
	add(fhir.Prim("id", s.ID))
	add(&fhir.Node{Name: "meta", Children: []*fhir.Node{
		fhir.Prim("versionId", strconv.FormatUint(s.VersionID, 10)),
		fhir.Prim("lastUpdated", s.LastUpdated.UTC().Format("2006-01-02T15:04:05.000Z07:00")),
		fhir.Prim("profile", ProfileURL),
	}})
	add(fhir.Prim("status", string(s.Status)))
	for _, c := range s.Contacts {
		cn := &fhir.Node{Name: "contact"}
		for _, f := range [][2]string{{"system", c.System}, {"value", c.Value}, {"use", c.Use}} {
			if f[1] != "" {
				cn.Children = append(cn.Children, fhir.Prim(f[0], f[1]))
			}
		}
		add(cn)
	}
	if s.EndText != "" {
		add(fhir.Prim("end", s.EndText))
	} else if !s.End.IsZero() {
		add(fhir.Prim("end", s.End.UTC().Format(time.RFC3339)))
	}
	add(fhir.Prim("reason", s.Reason))
	add(fhir.Prim("criteria", s.CriteriaText))
	ch := &fhir.Node{Name: "channel", Children: []*fhir.Node{fhir.Prim("type", s.Channel.Type), fhir.Prim("endpoint", s.Channel.Endpoint)}}
	if s.Channel.Payload != "" {
		ch.Children = append(ch.Children, fhir.Prim("payload", s.Channel.Payload))
	}
	for _, h := range s.Channel.Headers {
		ch.Children = append(ch.Children, fhir.Prim("header", h))
	}
	add(ch)
	return root
}
