package invariant

import (
	"strings"

	"github.com/ems-broker/ems/fhir"
)

// defs holds every supported invariant with the exact STU3 expression it
// implements.
var defs = map[string]def{
	"qty-3": {"code.empty() or system.exists()", func(n *fhir.Node, _ *Env) bool {
		return !exists(n, "code") || exists(n, "system")
	}},
	"age-1": {"(code or value.empty()) and (system.empty() or system = %ucum) and (value.empty() or value > 0)", func(n *fhir.Node, _ *Env) bool {
		if !quantityOK(n, ucum) {
			return false
		}
		if v, ok := val(n, "value"); ok {
			if f, ok := decimal(v); ok && f.Sign() <= 0 {
				return false
			}
		}
		return true
	}},
	"cnt-3": {"(code or value.empty()) and (system.empty() or system = %ucum) and (code.empty() or code = '1') and (value.empty() or value.toString().contains('.').not())", func(n *fhir.Node, _ *Env) bool {
		if !quantityOK(n, ucum) {
			return false
		}
		if c, ok := val(n, "code"); ok && c != "1" {
			return false
		}
		v, _ := val(n, "value")
		return !strings.Contains(v, ".")
	}},
	"dis-1": {"(code or value.empty()) and (system.empty() or system = %ucum)", func(n *fhir.Node, _ *Env) bool {
		return quantityOK(n, ucum)
	}},
	"mny-1": {"(code or value.empty()) and (system.empty() or system = 'urn:iso:std:iso:4217')", func(n *fhir.Node, _ *Env) bool {
		return quantityOK(n, "urn:iso:std:iso:4217")
	}},
	"drt-1": {"code.exists() implies ((system = %ucum) and value.exists())", func(n *fhir.Node, _ *Env) bool {
		if !exists(n, "code") {
			return true
		}
		sys, ok := val(n, "system")
		if ok && sys != ucum || !exists(n, "value") {
			return false
		}
		return true
	}},
	"sqty-1": {"comparator.empty()", func(n *fhir.Node, _ *Env) bool { return !exists(n, "comparator") }},
	"dom-1": {"contained.text.empty()", func(n *fhir.Node, _ *Env) bool {
		for _, r := range contained(n) {
			if exists(r, "text") {
				return false
			}
		}
		return true
	}},
	"dom-2": {"contained.contained.empty()", func(n *fhir.Node, _ *Env) bool {
		for _, r := range contained(n) {
			if exists(r, "contained") {
				return false
			}
		}
		return true
	}},
	"dom-3": {"contained.where(('#'+id in %resource.descendants().reference).not()).empty()", func(n *fhir.Node, env *Env) bool {
		cs := contained(n)
		if len(cs) == 0 {
			return true
		}
		root := n
		if env != nil && env.Resource != nil {
			root = env.Resource
		}
		refs := map[string]bool{}
		collectRefs(root, refs)
		for _, r := range cs {
			if id, ok := val(r, "id"); ok && !refs["#"+id] {
				return false
			}
		}
		return true
	}},
	"dom-4": {"contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()", func(n *fhir.Node, _ *Env) bool {
		for _, r := range contained(n) {
			if exists(r, "meta", "versionId") || exists(r, "meta", "lastUpdated") {
				return false
			}
		}
		return true
	}},
	"ait-1": {"verificationStatus='entered-in-error' or clinicalStatus.exists()", func(n *fhir.Node, _ *Env) bool {
		v, _ := val(n, "verificationStatus")
		return v == "entered-in-error" || exists(n, "clinicalStatus") || !exists(n, "verificationStatus")
	}},
	"ait-2": {"verificationStatus!='entered-in-error' or clinicalStatus.empty()", func(n *fhir.Node, _ *Env) bool {
		v, ok := val(n, "verificationStatus")
		return !ok || v != "entered-in-error" || !exists(n, "clinicalStatus")
	}},
	"con-3": {"verificationStatus='entered-in-error' or clinicalStatus.exists()", func(n *fhir.Node, _ *Env) bool {
		v, _ := val(n, "verificationStatus")
		return v == "entered-in-error" || exists(n, "clinicalStatus") || !exists(n, "verificationStatus")
	}},
	"con-4": {"abatement.empty() or (abatement as boolean).not()  or clinicalStatus='resolved' or clinicalStatus='remission' or clinicalStatus='inactive'", func(n *fhir.Node, _ *Env) bool {
		a := n.Child("abatementBoolean")
		if a == nil || a.Value != "true" {
			return true
		}
		s, ok := val(n, "clinicalStatus")
		return !ok || s == "resolved" || s == "remission" || s == "inactive"
	}},
	"con-1": {"summary.exists() or assessment.exists()", func(n *fhir.Node, _ *Env) bool {
		return exists(n, "summary") || exists(n, "assessment")
	}},
	"con-2": {"code.exists() or detail.exists()", func(n *fhir.Node, _ *Env) bool {
		return exists(n, "code") || exists(n, "detail")
	}},
	"att-1": {"data.empty() or contentType.exists()", func(n *fhir.Node, _ *Env) bool {
		return !exists(n, "data") || exists(n, "contentType")
	}},
	"bdl-1": {"total.empty() or (type = 'searchset') or (type = 'history')", func(n *fhir.Node, _ *Env) bool {
		t, ok := val(n, "type")
		return !exists(n, "total") || !ok || t == "searchset" || t == "history"
	}},
	"bdl-2": {"entry.search.empty() or (type = 'searchset')", func(n *fhir.Node, _ *Env) bool {
		t, ok := val(n, "type")
		return !exists(n, "entry", "search") || !ok || t == "searchset"
	}},
	"bdl-3": {"entry.request.empty() or type = 'batch' or type = 'transaction' or type = 'history'", func(n *fhir.Node, _ *Env) bool {
		t, ok := val(n, "type")
		return !exists(n, "entry", "request") || !ok || t == "batch" || t == "transaction" || t == "history"
	}},
	"bdl-4": {"entry.response.empty() or type = 'batch-response' or type = 'transaction-response'", func(n *fhir.Node, _ *Env) bool {
		t, ok := val(n, "type")
		return !exists(n, "entry", "response") || !ok || t == "batch-response" || t == "transaction-response"
	}},
	"bdl-5": {"resource.exists() or request.exists() or response.exists()", func(n *fhir.Node, _ *Env) bool {
		return exists(n, "resource") || exists(n, "request") || exists(n, "response")
	}},
	"bdl-7": {"entry.where(fullUrl).select(fullUrl&resource.meta.versionId).isDistinct()", func(n *fhir.Node, _ *Env) bool {
		if entries := len(n.Children); entries <= 32 {
			return distinctPairs(n) // a message bundle: no map, no joined keys
		}
		seen := map[string]bool{}
		for _, e := range n.ChildrenNamed("entry") {
			u, ok := val(e, "fullUrl")
			if !ok {
				continue
			}
			key := u + "\x00" + e.Child("resource").Resource().Str("meta", "versionId")
			if seen[key] {
				return false
			}
			seen[key] = true
		}
		return true
	}},
	"bdl-8": {"fullUrl.contains('/_history/').not()", func(n *fhir.Node, _ *Env) bool {
		u, _ := val(n, "fullUrl")
		return !strings.Contains(u, "/_history/")
	}},
	"bdl-9": {"type = 'document' implies (identifier.system.exists() and identifier.value.exists())", func(n *fhir.Node, _ *Env) bool {
		t, _ := val(n, "type")
		return t != "document" || exists(n, "identifier", "system") && exists(n, "identifier", "value")
	}},
	"ctm-1": {"onBehalfOf.exists() implies (member.resolve() is Practitioner)", func(n *fhir.Node, env *Env) bool {
		if !exists(n, "onBehalfOf") {
			return true
		}
		t := refType(n.Child("member"), env)
		return t == "" || t == "Practitioner"
	}},
	"com-1": {"notDone or notDoneReason.exists().not()", func(n *fhir.Node, _ *Env) bool {
		return notDoneOK(n, "notDone", "notDoneReason")
	}},
	"fhs-3": {"notDone or notDoneReason.exists().not()", func(n *fhir.Node, _ *Env) bool {
		return notDoneOK(n, "notDone", "notDoneReason")
	}},
	"cpt-2": {"value.empty() or system.exists()", func(n *fhir.Node, _ *Env) bool {
		return !exists(n, "value") || exists(n, "system")
	}},
	"fhs-1": {"age.empty() or born.empty()", func(n *fhir.Node, _ *Env) bool {
		return choice(n, "age") == nil || choice(n, "born") == nil
	}},
	"fhs-2": {"age.exists() or estimatedAge.empty()", func(n *fhir.Node, _ *Env) bool {
		return choice(n, "age") != nil || !exists(n, "estimatedAge")
	}},
	"imm-1": {"(notGiven = true).not() or (reaction.empty() and explanation.reason.empty())", func(n *fhir.Node, _ *Env) bool {
		v, _ := val(n, "notGiven")
		return v != "true" || !exists(n, "reaction") && !exists(n, "explanation", "reason")
	}},
	"imm-2": {"(notGiven = true) or explanation.reasonNotGiven.empty()", func(n *fhir.Node, _ *Env) bool {
		v, ok := val(n, "notGiven")
		return !ok || v == "true" || !exists(n, "explanation", "reasonNotGiven")
	}},
	"mps-1": {"(agent.resolve().empty()) or (agent.resolve() is Device) or (agent.resolve() is Practitioner) or onBehalfOf.exists().not()", func(n *fhir.Node, env *Env) bool {
		if !exists(n, "onBehalfOf") {
			return true
		}
		t := refType(n.Child("agent"), env)
		return t == "" || t == "Device" || t == "Practitioner"
	}},
	"rfr-1": {"(agent.resolve() is Device) or (agent.resolve() is Practitioner) or onBehalfOf.exists().not()", func(n *fhir.Node, env *Env) bool {
		if !exists(n, "onBehalfOf") {
			return true
		}
		t := refType(n.Child("agent"), env)
		return t == "" || t == "Device" || t == "Practitioner"
	}},
	"txt-1": {"htmlchecks()", func(n *fhir.Node, _ *Env) bool { return n.XHTML == "" || htmlOK(n.XHTML) }},
	"txt-2": {"htmlchecks()", func(n *fhir.Node, _ *Env) bool { return n.XHTML != "" && htmlHasContent(n.XHTML) }},
	"obs-3": {"low.exists() or high.exists() or text.exists()", func(n *fhir.Node, _ *Env) bool {
		return exists(n, "low") || exists(n, "high") || exists(n, "text")
	}},
	"obs-6": {"dataAbsentReason.empty() or value.empty()", func(n *fhir.Node, _ *Env) bool {
		return !exists(n, "dataAbsentReason") || choice(n, "value") == nil
	}},
	"obs-7": {"value.empty() or code!=component.code", func(n *fhir.Node, _ *Env) bool {
		if choice(n, "value") == nil {
			return true
		}
		code := n.Child("code")
		comps := n.ChildrenNamed("component")
		if code == nil || len(comps) != 1 || comps[0].Child("code") == nil {
			return true
		}
		return !equalNodes(code, comps[0].Child("code"))
	}},
	"org-1": {"(identifier.count() + name.count()) > 0", func(n *fhir.Node, _ *Env) bool {
		return exists(n, "identifier") || exists(n, "name")
	}},
	"org-2": {"where(use = 'home').empty()", func(n *fhir.Node, _ *Env) bool {
		u, _ := val(n, "use")
		return u != "home"
	}},
	"org-3": {"where(use = 'home').empty()", func(n *fhir.Node, _ *Env) bool {
		u, _ := val(n, "use")
		return u != "home"
	}},
	"pat-1": {"name.exists() or telecom.exists() or address.exists() or organization.exists()", func(n *fhir.Node, _ *Env) bool {
		return exists(n, "name") || exists(n, "telecom") || exists(n, "address") || exists(n, "organization")
	}},
	"per-1": {"start.empty() or end.empty() or (start <= end)", func(n *fhir.Node, _ *Env) bool {
		s, _ := val(n, "start")
		e, _ := val(n, "end")
		return orderedOK(s, e)
	}},
	"pro-1": {"notDoneReason.empty() or notDone = true", func(n *fhir.Node, _ *Env) bool {
		v, ok := val(n, "notDone")
		return !exists(n, "notDoneReason") || !ok || v == "true"
	}},
	"rng-2": {"low.empty() or high.empty() or (low <= high)", func(n *fhir.Node, _ *Env) bool {
		lo, hi := n.Child("low"), n.Child("high")
		if lo == nil || hi == nil || lo.Str("code") != hi.Str("code") {
			return true
		}
		a, okA := decimal(lo.Str("value"))
		b, okB := decimal(hi.Str("value"))
		return !okA || !okB || a.Cmp(b) <= 0
	}},
	"rat-1": {"(numerator.empty() xor denominator.exists()) and (numerator.exists() or extension.exists())", func(n *fhir.Node, _ *Env) bool {
		num, den := exists(n, "numerator"), exists(n, "denominator")
		return (!num != den) && (num || exists(n, "extension"))
	}},
	"ref-1": {"reference.startsWith('#').not() or (reference.substring(1).trace('url') in %resource.contained.id.trace('ids'))", func(n *fhir.Node, env *Env) bool {
		r, _ := val(n, "reference")
		if !strings.HasPrefix(r, "#") || env == nil || env.Resource == nil {
			return true
		}
		for _, c := range contained(env.Resource) {
			if id, _ := val(c, "id"); id == r[1:] {
				return true
			}
		}
		return false
	}},
	"inv-1": {"lastModified.exists().not() or authoredOn.exists().not() or lastModified >= authoredOn", func(n *fhir.Node, _ *Env) bool {
		a, _ := val(n, "authoredOn")
		m, _ := val(n, "lastModified")
		return orderedOK(a, m)
	}},
	"tim-1": {"duration.empty() or durationUnit.exists()", func(n *fhir.Node, _ *Env) bool {
		return !exists(n, "duration") || exists(n, "durationUnit")
	}},
	"tim-2": {"period.empty() or periodUnit.exists()", func(n *fhir.Node, _ *Env) bool {
		return !exists(n, "period") || exists(n, "periodUnit")
	}},
	"tim-4": {"duration.exists() implies duration >= 0", func(n *fhir.Node, _ *Env) bool {
		return nonNegative(n, "duration")
	}},
	"tim-5": {"period.exists() implies period >= 0", func(n *fhir.Node, _ *Env) bool {
		return nonNegative(n, "period")
	}},
	"tim-6": {"periodMax.empty() or period.exists()", func(n *fhir.Node, _ *Env) bool {
		return !exists(n, "periodMax") || exists(n, "period")
	}},
	"tim-7": {"durationMax.empty() or duration.exists()", func(n *fhir.Node, _ *Env) bool {
		return !exists(n, "durationMax") || exists(n, "duration")
	}},
	"tim-8": {"countMax.empty() or count.exists()", func(n *fhir.Node, _ *Env) bool {
		return !exists(n, "countMax") || exists(n, "count")
	}},
	"tim-9": {"offset.empty() or (when.exists() and ((when in ('C' | 'CM' | 'CD' | 'CV')).not()))", func(n *fhir.Node, _ *Env) bool {
		if !exists(n, "offset") {
			return true
		}
		w, ok := val(n, "when")
		return ok && w != "C" && w != "CM" && w != "CD" && w != "CV"
	}},
	"tim-10": {"timeOfDay.empty() or when.empty()", func(n *fhir.Node, _ *Env) bool {
		return !exists(n, "timeOfDay") || !exists(n, "when")
	}},
}

func nonNegative(n *fhir.Node, name string) bool {
	v, ok := val(n, name)
	if !ok {
		return true
	}
	f, ok := decimal(v)
	return !ok || f.Sign() >= 0
}
