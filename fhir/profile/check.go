package profile

import (
	"strings"

	"github.com/ems-broker/ems/fhir"
)

// binding checks a coded element against its required (error) or
// extensible (warning) value set.
func (w *walker) binding(n *fhir.Node, def *elem, typ string, at loc) {
	vs := def.vs
	if vs == nil || vs.unchecked {
		return
	}
	sev := fhir.SeverityError
	if def.Binding.Strength != "required" {
		sev = fhir.SeverityWarning
	}
	report := func(l loc, what string) {
		w.add(sev, fhir.InvalidResource, "code-invalid", l, def.ID+": "+what+" is not in ValueSet "+vs.name+" ("+def.Binding.Strength+")")
	}
	switch typ {
	case "code", "string", "uri":
		if !n.HasValue {
			return
		}
		for _, codes := range vs.codeSets {
			if _, ok := codes[n.Value]; ok {
				return
			}
		}
		report(at, "code '"+n.Value+"'")
	case "Coding":
		if ok, what := vs.hasCoding(n); !ok {
			report(at, what)
		}
		w.misspelled(n, at)
	case "Quantity":
		if n.Child("code") == nil {
			return
		}
		if ok, what := vs.hasCoding(n); !ok {
			report(at, what)
		}
	case "CodeableConcept":
		codings := 0
		for _, c := range n.Children {
			if c.Name == "coding" {
				codings++
			}
		}
		if codings == 0 {
			if sev == fhir.SeverityError {
				w.add(sev, fhir.InvalidResource, "code-invalid", at, def.ID+": no coding from ValueSet "+vs.name+" (required)")
			}
			return
		}
		var first string
		i := 0
		for _, c := range n.Children {
			if c.Name != "coding" {
				continue
			}
			ok, what := vs.hasCoding(c)
			if ok {
				l := w.index(at, "coding", i)
				w.misspelled(c, l)
				return
			}
			if first == "" {
				first = what
			}
			i++
		}
		if codings == 1 {
			l := w.index(at, "coding", 0)
			report(l, first)
		} else {
			report(at, "none of the codings ("+first+", ...)")
		}
	}
}

// hasCoding tells whether system|code is in the value set; value sets
// with SNOMED CT filters are checked at system level. When it is not, what
// names the coding for the diagnostic (only then built).
func (vs *valueSet) hasCoding(c *fhir.Node) (ok bool, what string) {
	sys, code := c.Str("system"), c.Str("code")
	if fixed, ok := misspelledSystem(sys); ok {
		if _, in := vs.codes[fixed][code]; in {
			return true, ""
		}
	}
	if vs.systems[sys] {
		if sys == snomedSystem && !validSCTID(code) {
			return false, codingText(sys, code) + ": not a valid SNOMED CT identifier, so"
		}
		if code != "" {
			return true, ""
		}
		return false, codingText(sys, code)
	}
	if codes, ok := vs.codes[sys]; ok {
		if _, in := codes[code]; in {
			return true, ""
		}
	}
	return false, codingText(sys, code)
}

func codingText(sys, code string) string { return "code '" + code + "' (system " + sys + ")" }

// reference checks that a Reference points at an allowed resource type and,
// for references local to the message, that the target exists.
func (w *walker) reference(n *fhir.Node, def *elem, at loc) {
	ref := n.Child("reference")
	if ref == nil || !ref.HasValue {
		return
	}
	r := ref.Value
	l := w.field(at, "reference")
	if strings.HasPrefix(r, "#") {
		return // ref-1 checks contained targets
	}
	var typ string
	if w.env.Resolve != nil {
		if t := w.env.Resolve(r); t != nil {
			typ = t.ResourceType
		}
	}
	if typ == "" {
		if strings.HasPrefix(r, "urn:uuid:") || strings.HasPrefix(r, "urn:oid:") {
			if w.env.Resolve != nil {
				// A warning, not an error: official examples carry
				// dangling references (BirthNotificationWithoutMother), and
				// the routing rules check the references that matter
				// (focus, subject) themselves.
				w.add(fhir.SeverityWarning, fhir.ReferenceNotFound, "not-found", l, def.ID+": reference '"+r+"' does not resolve inside the message")
			}
			return
		}
		typ = literalType(r)
	}
	if typ == "" {
		return
	}
	targets := def.targets
	if len(targets) == 0 {
		return
	}
	for _, t := range targets {
		if t == typ || t == "Resource" {
			return
		}
	}
	w.errorf("value", l, def.ID+": reference to "+typ+" is not allowed (allowed: "+strings.Join(targets, ", ")+")")
}

// literalType is the resource type named by a relative ("Patient/1") or
// absolute (".../STU3/Organization/X26") literal reference.
func literalType(r string) string {
	if i := strings.Index(r, "/_history/"); i >= 0 {
		r = r[:i]
	}
	// The second-to-last segment of r without a trailing slash.
	r = strings.TrimSuffix(r, "/")
	end := strings.LastIndexByte(r, '/')
	if end < 0 {
		return ""
	}
	t := r[strings.LastIndexByte(r[:end], '/')+1 : end]
	if t == "" || t[0] < 'A' || t[0] > 'Z' {
		return ""
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return ""
		}
	}
	return t
}

// careConnectBase is where CareConnect CodeSystems live; live publishers
// (and the official NEMS examples) often drop the "CodeSystem/" segment.
const careConnectBase = "https://fhir.hl7.org.uk/STU3/"

// misspelledSystem maps a CareConnect code system URL missing its
// "CodeSystem/" segment to the real one. Such codings are accepted (the
// binding check reports a warning instead) because the official examples
// and the live service share the defect (fixtures INDEX.md).
func misspelledSystem(sys string) (string, bool) {
	rest, ok := strings.CutPrefix(sys, careConnectBase)
	if !ok || strings.Contains(rest, "/") {
		return "", false
	}
	return careConnectBase + "CodeSystem/" + rest, true
}

func (w *walker) misspelled(c *fhir.Node, at loc) {
	if fixed, ok := misspelledSystem(c.Str("system")); ok {
		l := w.field(at, "system")
		w.add(fhir.SeverityWarning, fhir.InvalidCodeSystem, "code-invalid", l, "code system '"+c.Str("system")+"' should be '"+fixed+"'")
	}
}
