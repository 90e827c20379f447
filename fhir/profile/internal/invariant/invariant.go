// Package invariant implements natively the FHIR STU3 base invariants the
// compiled profiles carry. The set is closed (the NHS profiles add none of
// their own), so a Go function per key is faster and simpler than a FHIRPath
// engine; the compiler refuses any constraint whose key and expression are
// not in this table, so a new or changed invariant cannot slip through
// unchecked.
//
// Each function follows FHIRPath's three-valued logic: an invariant fails
// only when its expression is definitely false, never when it is empty.
package invariant

import (
	"encoding/xml"
	"io"
	"math/big"
	"strings"
	"time"

	"github.com/ems-broker/ems/fhir"
)

// Env is what an invariant may look at besides its context element.
type Env struct {
	// Resource is %resource: the resource the element belongs to.
	Resource *fhir.Node
	// Resolve finds the resource a reference points at inside the message,
	// or returns nil (resolve() is then empty).
	Resolve func(reference string) *fhir.Node
}

type def struct {
	expr string
	fn   func(n *fhir.Node, env *Env) bool
}

// Supported reports whether key is implemented for exactly this expression
// (whitespace-insensitive).
func Supported(key, expression string) bool {
	d, ok := defs[key]
	return ok && norm(d.expr) == norm(expression)
}

// Check evaluates invariant key at n; true means satisfied. An unknown key
// panics: the compiler guarantees it cannot happen.
func Check(key string, n *fhir.Node, env *Env) bool {
	d, ok := defs[key]
	if !ok {
		panic("invariant: no implementation for " + key)
	}
	return d.fn(n, env)
}

// Func is the implementation of invariant key, or nil when there is none.
// The validator resolves each element's keys once, at load, instead of
// looking the key up at every element it checks.
func Func(key string) func(n *fhir.Node, env *Env) bool {
	return defs[key].fn
}

func norm(s string) string { return strings.Join(strings.Fields(s), " ") }

// exists tells whether any element exists along path (any repetition).
func exists(n *fhir.Node, path ...string) bool {
	if n == nil {
		return false
	}
	if len(path) == 0 {
		return true
	}
	for _, c := range n.Children {
		if c.Name == path[0] && exists(c, path[1:]...) {
			return true
		}
	}
	return false
}

// choice tells whether a choice element name[x] is present.
func choice(n *fhir.Node, name string) *fhir.Node {
	for _, c := range n.Children {
		if len(c.Name) > len(name) && strings.HasPrefix(c.Name, name) && c.Name[len(name)] >= 'A' && c.Name[len(name)] <= 'Z' {
			return c
		}
	}
	return nil
}

func val(n *fhir.Node, name string) (string, bool) {
	c := n.Child(name)
	if c == nil || !c.HasValue {
		return "", false
	}
	return c.Value, true
}

const ucum = "http://unitsofmeasure.org"

// quantityOK covers age-1, dis-1, mny-1 and the shared part of cnt-3:
// (code or value.empty()) and (system.empty() or system = want).
func quantityOK(n *fhir.Node, want string) bool {
	_, hasCode := val(n, "code")
	if !hasCode && exists(n, "value") {
		return false
	}
	if sys, ok := val(n, "system"); ok && sys != want {
		return false
	}
	return true
}

func decimal(s string) (*big.Float, bool) {
	f, _, err := big.ParseFloat(s, 10, 128, big.ToNearestEven)
	return f, err == nil
}

// notDoneOK is "flag or reason.exists().not()": false only when flag is
// explicitly false and the reason is present.
func notDoneOK(n *fhir.Node, flag, reason string) bool {
	v, ok := val(n, flag)
	if ok && v == "true" {
		return true
	}
	if !exists(n, reason) {
		return true
	}
	return !ok // empty or false → empty: satisfied
}

// orderedOK compares two date/time values: false only when both are
// comparable (same precision) and a > b.
func orderedOK(a, b string) bool {
	if a == "" || b == "" {
		return true
	}
	ta, errA := time.Parse(time.RFC3339Nano, a)
	tb, errB := time.Parse(time.RFC3339Nano, b)
	if errA == nil && errB == nil {
		return !ta.After(tb)
	}
	if len(a) == len(b) && len(a) <= 10 {
		return a <= b
	}
	return true
}

// refType is the resource type a reference points at: the resolved
// resource's, or the one a literal "Type/id" reference names; "" if unknown.
func refType(ref *fhir.Node, env *Env) string {
	r, _ := val(ref, "reference")
	if r == "" {
		return ""
	}
	if env != nil && env.Resolve != nil {
		if t := env.Resolve(r); t != nil {
			return t.ResourceType
		}
	}
	parts := strings.Split(strings.TrimSuffix(r, "/"), "/")
	if i := len(parts) - 2; i >= 0 && !strings.Contains(r, "/_history/") {
		if p := parts[i]; p != "" && p[0] >= 'A' && p[0] <= 'Z' {
			return p
		}
	}
	return ""
}

func equalNodes(a, b *fhir.Node) bool {
	if a.Name != b.Name || a.Value != b.Value || a.HasValue != b.HasValue || len(a.Children) != len(b.Children) {
		return false
	}
	for i := range a.Children {
		if !equalNodes(a.Children[i], b.Children[i]) {
			return false
		}
	}
	return true
}

func allNamed(n *fhir.Node, name string, f func(*fhir.Node) bool) bool {
	for _, c := range n.Children {
		if c.Name == name && !f(c) {
			return false
		}
	}
	return true
}

// distinctPairs is bdl-7 for a small bundle: no two entries with a
// fullUrl have the same fullUrl&resource.meta.versionId, compared pair by
// pair instead of through a map of joined keys.
func distinctPairs(bundle *fhir.Node) bool {
	for i, e := range bundle.Children {
		u, ok := val(e, "fullUrl")
		if e.Name != "entry" || !ok {
			continue
		}
		ver := e.Child("resource").Resource().Str("meta", "versionId")
		for _, f := range bundle.Children[i+1:] {
			if f.Name != "entry" {
				continue
			}
			if u2, ok := val(f, "fullUrl"); ok && joinedEqual(u, ver, u2, f.Child("resource").Resource().Str("meta", "versionId")) {
				return false
			}
		}
	}
	return true
}

// joinedEqual is a1+"\x00"+b1 == a2+"\x00"+b2 without building either.
func joinedEqual(a1, b1, a2, b2 string) bool {
	if len(a1)+len(b1) != len(a2)+len(b2) {
		return false
	}
	if len(a1) == len(a2) {
		return a1 == a2 && b1 == b2
	}
	return a1+"\x00"+b1 == a2+"\x00"+b2 // the parts hold NULs: compare the joined forms
}

func contained(n *fhir.Node) []*fhir.Node {
	var out []*fhir.Node
	for _, c := range n.ChildrenNamed("contained") {
		if r := c.Resource(); r != nil {
			out = append(out, r)
		}
	}
	return out
}

func collectRefs(n *fhir.Node, into map[string]bool) {
	for _, c := range n.Children {
		if c.Name == "reference" && c.HasValue {
			into[c.Value] = true
		}
		collectRefs(c, into)
	}
}

// htmlOK implements the narrative rules of txt-1: only the XHTML subset
// FHIR allows, no scripts, event handlers or external references.
func htmlOK(div string) bool {
	d := xml.NewDecoder(strings.NewReader(div))
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
		if t, ok := tok.(xml.StartElement); ok {
			if !allowedTags[t.Name.Local] {
				return false
			}
			for _, a := range t.Attr {
				name := strings.ToLower(a.Name.Local)
				if a.Name.Space == "xmlns" || name == "xmlns" {
					continue
				}
				if !allowedAttrs[name] {
					return false
				}
				if (name == "href" || name == "src") && strings.HasPrefix(strings.ToLower(strings.TrimSpace(a.Value)), "javascript:") {
					return false
				}
			}
		}
	}
}

// htmlHasContent is txt-2: some non-whitespace text, or an image.
func htmlHasContent(div string) bool {
	d := xml.NewDecoder(strings.NewReader(div))
	for {
		tok, err := d.Token()
		if err != nil {
			return false
		}
		switch t := tok.(type) {
		case xml.CharData:
			if strings.TrimSpace(string(t)) != "" {
				return true
			}
		case xml.StartElement:
			if t.Name.Local == "img" {
				return true
			}
		}
	}
}

var allowedTags = set("div", "p", "br", "hr", "span", "b", "i", "u", "em", "strong", "small", "big", "sub", "sup",
	"tt", "pre", "code", "blockquote", "q", "cite", "dfn", "abbr", "acronym", "kbd", "samp", "var", "a", "img",
	"h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "dl", "dt", "dd", "table", "caption", "thead", "tbody",
	"tfoot", "tr", "th", "td", "col", "colgroup", "address", "bdo", "map", "area", "ins", "del")

var allowedAttrs = set("id", "class", "style", "title", "lang", "dir", "href", "name", "src", "alt", "width",
	"height", "border", "colspan", "rowspan", "span", "align", "valign", "cellpadding", "cellspacing", "summary",
	"abbr", "axis", "headers", "scope", "char", "charoff", "frame", "rules", "shape", "coords", "nohref", "usemap",
	"start", "type", "value", "compact", "datetime", "cite", "hreflang", "rel", "rev", "charset", "accesskey",
	"tabindex", "xml:lang", "space")

func set(s ...string) map[string]bool {
	m := make(map[string]bool, len(s))
	for _, x := range s {
		m[x] = true
	}
	return m
}
