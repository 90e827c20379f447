package profile

import (
	"strings"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/profile/internal/rules"
)

// binding checks a coded element against its required (error) or
// extensible (warning) value set.
func (w *walker) binding(n *fhir.Node, def *rules.Element, typ string, at fhir.Path) {
	vs := w.v.vs[def.Binding.ValueSet]
	if vs == nil || vs.unchecked {
		return
	}
	sev := fhir.SeverityError
	if def.Binding.Strength != "required" {
		sev = fhir.SeverityWarning
	}
	report := func(loc fhir.Path, what string) {
		w.add(sev, fhir.InvalidResource, "code-invalid", loc, def.ID+": "+what+" is not in ValueSet "+vs.name+" ("+def.Binding.Strength+")")
	}
	switch typ {
	case "code", "string", "uri":
		if !n.HasValue {
			return
		}
		for _, codes := range vs.codes {
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
		codings := n.ChildrenNamed("coding")
		if len(codings) == 0 {
			if sev == fhir.SeverityError {
				w.add(sev, fhir.InvalidResource, "code-invalid", at, def.ID+": no coding from ValueSet "+vs.name+" (required)")
			}
			return
		}
		var first string
		for i, c := range codings {
			ok, what := vs.hasCoding(c)
			if ok {
				w.misspelled(c, at.Index("coding", i))
				return
			}
			if first == "" {
				first = what
			}
		}
		if len(codings) == 1 {
			report(at.Index("coding", 0), first)
		} else {
			report(at, "none of the codings ("+first+", ...)")
		}
	}
}

// hasCoding tells whether system|code is in the value set; value sets
// with SNOMED CT filters are checked at system level.
func (vs *valueSet) hasCoding(c *fhir.Node) (bool, string) {
	sys, code := c.Str("system"), c.Str("code")
	what := "code '" + code + "' (system " + sys + ")"
	if fixed, ok := misspelledSystem(sys); ok {
		if _, in := vs.codes[fixed][code]; in {
			return true, what
		}
	}
	if vs.systems[sys] {
		if sys == snomedSystem && !validSCTID(code) {
			return false, what + ": not a valid SNOMED CT identifier, so"
		}
		return code != "", what
	}
	if codes, ok := vs.codes[sys]; ok {
		_, in := codes[code]
		return in, what
	}
	return false, what
}

// reference checks that a Reference points at an allowed resource type and,
// for references local to the message, that the target exists.
func (w *walker) reference(n *fhir.Node, def *rules.Element, at fhir.Path) {
	ref := n.Child("reference")
	if ref == nil || !ref.HasValue {
		return
	}
	r := ref.Value
	loc := at.Field("reference")
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
				w.add(fhir.SeverityWarning, fhir.ReferenceNotFound, "not-found", loc, def.ID+": reference '"+r+"' does not resolve inside the message")
			}
			return
		}
		typ = literalType(r)
	}
	if typ == "" {
		return
	}
	targets := w.targets(def)
	if len(targets) == 0 {
		return
	}
	for _, t := range targets {
		if t == typ || t == "Resource" {
			return
		}
	}
	w.errorf("value", loc, def.ID+": reference to "+typ+" is not allowed (allowed: "+strings.Join(targets, ", ")+")")
}

// targets lists the resource types a Reference element may point at.
func (w *walker) targets(def *rules.Element) []string {
	var out []string
	for _, t := range def.Types {
		if t.Code != "Reference" {
			continue
		}
		tps := t.TargetProfiles
		if t.Profile != "" {
			// Forge sometimes writes the target as the type profile.
			tps = append(tps[:len(tps):len(tps)], t.Profile)
		}
		for _, tp := range tps {
			name := ""
			if p := w.v.set.Profiles[tp]; p != nil {
				name = p.Type
			} else if strings.HasPrefix(tp, "http://hl7.org/fhir/StructureDefinition/") {
				name = strings.TrimPrefix(tp, "http://hl7.org/fhir/StructureDefinition/")
			} else {
				continue // an unknown target profile: cannot narrow
			}
			out = append(out, name)
		}
	}
	return out
}

// literalType is the resource type named by a relative ("Patient/1") or
// absolute (".../STU3/Organization/X26") literal reference.
func literalType(r string) string {
	if strings.Contains(r, "/_history/") {
		r = r[:strings.Index(r, "/_history/")]
	}
	parts := strings.Split(strings.TrimSuffix(r, "/"), "/")
	if len(parts) < 2 {
		return ""
	}
	t := parts[len(parts)-2]
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

func (w *walker) misspelled(c *fhir.Node, at fhir.Path) {
	if fixed, ok := misspelledSystem(c.Str("system")); ok {
		w.add(fhir.SeverityWarning, fhir.InvalidCodeSystem, "code-invalid", at.Field("system"), "code system '"+c.Str("system")+"' should be '"+fixed+"'")
	}
}
