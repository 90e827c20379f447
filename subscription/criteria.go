package subscription

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/ems-broker/ems/fhir"
)

// Kind says whether a subscription names one patient (explicit) or matches
// patients through a rule over their demographics (generic).
type Kind uint8

// Subscription kinds.
const (
	Explicit Kind = 1
	Generic  Kind = 2
)

func (k Kind) String() string {
	switch k {
	case Explicit:
		return "explicit"
	case Generic:
		return "generic"
	}
	return "unknown"
}

// RuleType is the subscriptionRuleType of a generic subscription
// (subscriptions.md §4).
type RuleType string

// Rule types.
const (
	RuleGPPractice     RuleType = "GP_GP_GP"
	RuleGPSubICB       RuleType = "CHO_GP_CCG"
	RulePostcodeSubICB RuleType = "CHO_POSTCODE_CCG"
	RulePostcodeLA     RuleType = "UHV_POSTCODE_LACODE"
	RuleCountry        RuleType = "COUNTRYCODE"
)

// RuleTypes lists every rule type in a fixed order.
var RuleTypes = []RuleType{RuleGPPractice, RuleGPSubICB, RulePostcodeSubICB, RulePostcodeLA, RuleCountry}

func validRule(r RuleType) bool {
	for _, x := range RuleTypes {
		if x == r {
			return true
		}
	}
	return false
}

// countryCodes are the ONS country codes COUNTRYCODE accepts.
var countryCodes = map[string]bool{
	"E92000001": true, // England
	"W92000004": true, // Wales
	"S92000003": true, // Scotland
	"N92000002": true, // Northern Ireland
	"L93000001": true, // Channel Islands
	"M83000003": true, // Isle of Man
}

// Registration is the GPRegistration filter.
type Registration uint8

// GPRegistration values; RegistrationAny is "absent".
const (
	RegistrationAny Registration = iota
	RegisteredOnly
	UnregisteredOnly
)

func (r Registration) String() string {
	switch r {
	case RegisteredOnly:
		return "RegisteredOnly"
	case UnregisteredOnly:
		return "UnregisteredOnly"
	}
	return ""
}

// serviceTypes are the allowed serviceType values (informational only).
var serviceTypes = map[string]bool{"GP": true, "CHO": true, "UHV": true, "EPCHR": true}

// NHS number systems accepted in Patient.identifier: the current one, the
// retired one every NEMS criteria example uses, and none at all.
const retiredNHSNumberSystem = "http://fhir.nhs.net/Id/nhs-number"

// maxAge bounds Patient.age so that an absurd value is reported rather than
// silently matching everyone or no one.
const maxAge = 150

// maxTagLen is the tag length limit of the grammar.
const maxTagLen = 100

// Criteria is a parsed Subscription.criteria. It is the only form the
// store and matcher use; the verbatim text is kept beside it solely to
// return it unchanged to the client.
type Criteria struct {
	Kind        Kind   `json:"kind"`
	ServiceType string `json:"serviceType,omitempty"`
	// NHSNumber is the ten-digit patient number of an explicit subscription.
	NHSNumber string `json:"nhsNumber,omitempty"`
	// Events are the MessageHeader.event codes, sorted; OR semantics.
	Events []string `json:"events"`
	// Rule and Organisation are the generic rule and the code it matches.
	Rule         RuleType `json:"rule,omitempty"`
	Organisation string   `json:"organisation,omitempty"`
	// Age filters: the patient's whole-year age must be > AgeGT and < AgeLT
	// when the corresponding Has flag is set.
	HasAgeLT     bool         `json:"hasAgeLT,omitempty"`
	HasAgeGT     bool         `json:"hasAgeGT,omitempty"`
	AgeLT        int          `json:"ageLT,omitempty"`
	AgeGT        int          `json:"ageGT,omitempty"`
	Registration Registration `json:"registration,omitempty"`
	Tag          string       `json:"tag,omitempty"`
}

// CriteriaError says which component of a criteria string is wrong and with
// which Spine code it is reported.
type CriteriaError struct {
	Code      fhir.SpineCode
	Component string // the component name ("tag"), or "" for the whole string
	Message   string
}

func (e *CriteriaError) Error() string {
	if e.Component == "" {
		return "criteria: " + e.Message
	}
	return "criteria component " + e.Component + ": " + e.Message
}

func criteriaErr(code fhir.SpineCode, component, format string, args ...any) *CriteriaError {
	return &CriteriaError{Code: code, Component: component, Message: fmt.Sprintf(format, args...)}
}

// Component names of the grammar.
const (
	compType         = "type"
	compServiceType  = "serviceType"
	compPatient      = "Patient.identifier"
	compEvent        = "MessageHeader.event"
	compAge          = "Patient.age"
	compRegistration = "GPRegistration"
	compRule         = "subscriptionRuleType"
	compOrganisation = "Organization.identifier"
	compTag          = "tag"
)

// ParseCriteria parses Subscription.criteria (subscriptions.md §3). It is
// pure: whether the event codes exist and may be subscribed to is the
// catalogue's business (see Service), so the parser checks only their form.
func ParseCriteria(s string) (Criteria, *CriteriaError) {
	var c Criteria
	path, query, ok := strings.Cut(s, "?")
	if !ok || (path != "/Bundle" && path != "Bundle") {
		return c, criteriaErr(fhir.InvalidParameter, "", "must start with /Bundle?type=message")
	}
	if query == "" {
		return c, criteriaErr(fhir.InvalidParameter, "", "has no components after /Bundle?")
	}
	seen := map[string]int{}
	for _, raw := range strings.Split(query, "&") {
		if raw == "" {
			return c, criteriaErr(fhir.InvalidParameter, "", "has an empty component (two '&' in a row or a trailing '&')")
		}
		rawKey, rawVal, hasEq := strings.Cut(raw, "=")
		key, err := url.PathUnescape(rawKey)
		if err != nil {
			return c, criteriaErr(fhir.InvalidParameter, "", "component %q is not correctly URL-encoded", raw)
		}
		val, err := url.PathUnescape(rawVal)
		if err != nil {
			return c, criteriaErr(fhir.InvalidParameter, key, "value %q is not correctly URL-encoded", rawVal)
		}
		if !hasEq || val == "" {
			return c, criteriaErr(fhir.InvalidParameter, key, "has no value")
		}
		seen[key]++
		n := seen[key]
		switch key {
		case compType:
			if val != "message" {
				return c, criteriaErr(fhir.InvalidParameter, key, "must be message, not %q", val)
			}
			if n > 1 {
				return c, repeated(key)
			}
		case compServiceType:
			if n > 1 {
				return c, repeated(key)
			}
			if !serviceTypes[val] {
				return c, criteriaErr(fhir.InvalidParameter, key, "%q is not one of GP, CHO, UHV, EPCHR", val)
			}
			c.ServiceType = val
		case compPatient:
			if n > 1 {
				return c, repeated(key)
			}
			nhs, cerr := parseNHSIdentifier(val)
			if cerr != nil {
				return c, cerr
			}
			c.NHSNumber = nhs
		case compEvent:
			if !validEventCode(val) {
				return c, criteriaErr(fhir.InvalidCodeValue, key, "%q is not an event type code (lower-case letters, digits and '-', e.g. pds-change-of-gp-1)", val)
			}
			for _, e := range c.Events {
				if e == val {
					return c, criteriaErr(fhir.InvalidParameter, key, "event %s is listed twice", val)
				}
			}
			c.Events = append(c.Events, val)
		case compAge:
			if cerr := c.parseAge(val); cerr != nil {
				return c, cerr
			}
		case compRegistration:
			if n > 1 {
				return c, repeated(key)
			}
			switch val {
			case "RegisteredOnly":
				c.Registration = RegisteredOnly
			case "UnregisteredOnly":
				c.Registration = UnregisteredOnly
			default:
				return c, criteriaErr(fhir.InvalidParameter, key, "%q is not RegisteredOnly or UnregisteredOnly", val)
			}
		case compRule:
			if n > 1 {
				return c, repeated(key)
			}
			r := RuleType(val)
			if !validRule(r) {
				hint := ""
				if val == "HSS" {
					hint = " (HSS was renamed COUNTRYCODE)"
				}
				return c, criteriaErr(fhir.InvalidCodeValue, key, "%q is not one of GP_GP_GP, CHO_GP_CCG, CHO_POSTCODE_CCG, UHV_POSTCODE_LACODE, COUNTRYCODE%s", val, hint)
			}
			c.Rule = r
		case compOrganisation:
			if n > 1 {
				return c, repeated(key)
			}
			if !validOrgCode(val) {
				return c, criteriaErr(fhir.InvalidParameter, key, "%q is not an organisation code (3 to 10 upper-case letters and digits)", val)
			}
			c.Organisation = val
		case compTag:
			if n > 1 {
				return c, repeated(key)
			}
			if cerr := checkTag(val); cerr != nil {
				return c, cerr
			}
			c.Tag = val
		default:
			return c, criteriaErr(fhir.InvalidParameter, key, "is not a criteria component (allowed: type, serviceType, Patient.identifier, MessageHeader.event, Patient.age, GPRegistration, subscriptionRuleType, Organization.identifier, tag)")
		}
	}
	if seen[compType] == 0 {
		return c, criteriaErr(fhir.InvalidParameter, compType, "type=message is required")
	}
	if cerr := c.checkShape(); cerr != nil {
		return c, cerr
	}
	sort.Strings(c.Events)
	return c, nil
}

func repeated(key string) *CriteriaError {
	return criteriaErr(fhir.InvalidParameter, key, "may appear only once")
}

// checkShape applies the explicit/generic cardinalities of §3.
func (c *Criteria) checkShape() *CriteriaError {
	switch {
	case c.NHSNumber != "" && c.Rule != "":
		return criteriaErr(fhir.InvalidParameter, compRule, "cannot be combined with Patient.identifier: a subscription is either explicit (one patient) or generic (a rule)")
	case c.NHSNumber != "":
		c.Kind = Explicit
		if c.Organisation != "" {
			return criteriaErr(fhir.InvalidParameter, compOrganisation, "is only allowed in a generic subscription (with subscriptionRuleType)")
		}
		if len(c.Events) == 0 {
			return criteriaErr(fhir.InvalidParameter, compEvent, "at least one MessageHeader.event is required")
		}
	case c.Rule != "":
		c.Kind = Generic
		if len(c.Events) != 1 {
			return criteriaErr(fhir.InvalidParameter, compEvent, "a generic subscription names exactly one MessageHeader.event, not %d", len(c.Events))
		}
		if c.Organisation == "" {
			return criteriaErr(fhir.InvalidParameter, compOrganisation, "is required with subscriptionRuleType %s", c.Rule)
		}
		if c.Rule == RuleCountry && !countryCodes[c.Organisation] {
			return criteriaErr(fhir.InvalidParameter, compOrganisation, "%q is not an ONS country code (E92000001, W92000004, S92000003, N92000002, L93000001, M83000003)", c.Organisation)
		}
		if c.Registration == UnregisteredOnly && (c.Rule == RuleGPPractice || c.Rule == RuleGPSubICB) {
			return criteriaErr(fhir.InvalidParameter, compRegistration, "UnregisteredOnly can never match rule %s, which selects patients by their registered GP", c.Rule)
		}
	default:
		if c.Organisation != "" {
			return criteriaErr(fhir.InvalidParameter, compRule, "Organization.identifier needs a subscriptionRuleType")
		}
		return criteriaErr(fhir.InvalidParameter, "", "needs either Patient.identifier (explicit) or subscriptionRuleType and Organization.identifier (generic)")
	}
	if c.HasAgeGT && c.HasAgeLT && c.AgeLT-c.AgeGT < 2 {
		return criteriaErr(fhir.InvalidParameter, compAge, "gt%d and lt%d leave no whole-year age that can match", c.AgeGT, c.AgeLT)
	}
	return nil
}

func (c *Criteria) parseAge(val string) *CriteriaError {
	if len(val) < 3 || (val[:2] != "lt" && val[:2] != "gt") {
		return criteriaErr(fhir.InvalidParameter, compAge, "%q must be lt or gt followed by a whole number of years (e.g. lt19)", val)
	}
	digits := val[2:]
	if len(digits) > 3 || strings.Trim(digits, "0123456789") != "" {
		return criteriaErr(fhir.InvalidParameter, compAge, "%q must be lt or gt followed by a whole number of years (e.g. lt19)", val)
	}
	n, _ := strconv.Atoi(digits)
	if n > maxAge {
		return criteriaErr(fhir.InvalidParameter, compAge, "%q: age must be at most %d", val, maxAge)
	}
	if val[:2] == "lt" {
		if c.HasAgeLT {
			return criteriaErr(fhir.InvalidParameter, compAge, "lt may appear only once")
		}
		if n == 0 {
			return criteriaErr(fhir.InvalidParameter, compAge, "lt0 can never match")
		}
		c.HasAgeLT, c.AgeLT = true, n
		return nil
	}
	if c.HasAgeGT {
		return criteriaErr(fhir.InvalidParameter, compAge, "gt may appear only once")
	}
	c.HasAgeGT, c.AgeGT = true, n
	return nil
}

// parseNHSIdentifier accepts "{system}|{nhs}" with either NHS number system,
// or a bare number, and returns the ten digits.
func parseNHSIdentifier(val string) (string, *CriteriaError) {
	num := val
	if system, n, ok := strings.Cut(val, "|"); ok {
		if system != fhir.NHSNumberSystem && system != retiredNHSNumberSystem {
			return "", criteriaErr(fhir.InvalidIdentifierSystem, compPatient, "system %q is not %s (or the retired %s)", system, fhir.NHSNumberSystem, retiredNHSNumberSystem)
		}
		num = n
	}
	if p := fhir.NHSNumberProblem(num); p != "" {
		return "", criteriaErr(fhir.InvalidNHSNumber, compPatient, "NHS number %q %s", num, p)
	}
	return num, nil
}

func validEventCode(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-') {
			return false
		}
	}
	return true
}

func validOrgCode(s string) bool {
	if len(s) < 3 || len(s) > 10 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9') {
			return false
		}
	}
	return true
}

func checkTag(val string) *CriteriaError {
	if len(val) > maxTagLen {
		return criteriaErr(fhir.InvalidParameter, compTag, "is %d characters long; at most %d are allowed", len(val), maxTagLen)
	}
	for i := 0; i < len(val); i++ {
		ch := val[i]
		if !(ch >= 'A' && ch <= 'Z' || ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '|' || ch == ',') {
			return criteriaErr(fhir.InvalidParameter, compTag, "character %q at position %d is not allowed (letters, digits, '-', '_', '|' and ',' only)", rune(ch), i+1)
		}
	}
	return nil
}

// Normalised is the canonical text of the criteria: components in a fixed
// order, events sorted, the NHS number in the current system. Two criteria
// that mean the same thing have the same normalised form, which is what
// duplicate detection compares.
func (c Criteria) Normalised() string {
	var b strings.Builder
	b.WriteString("/Bundle?type=message")
	add := func(k, v string) {
		b.WriteString("&" + k + "=" + v)
	}
	if c.ServiceType != "" {
		add(compServiceType, c.ServiceType)
	}
	if c.NHSNumber != "" {
		add(compPatient, fhir.NHSNumberSystem+"|"+c.NHSNumber)
	}
	for _, e := range c.Events {
		add(compEvent, e)
	}
	if c.HasAgeGT {
		add(compAge, "gt"+strconv.Itoa(c.AgeGT))
	}
	if c.HasAgeLT {
		add(compAge, "lt"+strconv.Itoa(c.AgeLT))
	}
	if c.Registration != RegistrationAny {
		add(compRegistration, c.Registration.String())
	}
	if c.Rule != "" {
		add(compRule, string(c.Rule))
	}
	if c.Organisation != "" {
		add(compOrganisation, c.Organisation)
	}
	if c.Tag != "" {
		add(compTag, c.Tag)
	}
	return b.String()
}

// HasEvent reports whether code is one of the subscribed events.
func (c Criteria) HasEvent(code string) bool {
	for _, e := range c.Events {
		if e == code {
			return true
		}
	}
	return false
}
