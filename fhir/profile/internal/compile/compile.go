// Package compile turns StructureDefinition snapshots, ValueSets and
// CodeSystems into the rule form of package rules. It is strict on purpose:
// any rule kind the validator cannot enforce (a pattern, a non-value
// discriminator, an invariant without a native implementation, a required
// binding to a value set we cannot expand) fails compilation, so a profile is
// never half-checked without anyone noticing.
package compile

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/profile/internal/rules"
)

// CoreBase is the canonical base of the FHIR STU3 core definitions.
const CoreBase = "http://hl7.org/fhir/StructureDefinition/"

// Options steer a compilation.
type Options struct {
	// Roots are the canonical URLs (or bare core type names) to compile;
	// everything they reach through types, type profiles and bindings is
	// compiled too.
	Roots []string
	// Invariant reports whether the validator implements the constraint
	// with this key and FHIRPath expression. A constraint it does not
	// implement fails compilation.
	Invariant func(key, expression string) bool
	// Unchecked lists value set URLs that cannot be expanded offline and are
	// accepted without a code check (external code systems).
	Unchecked []string
	// Base is an already compiled set the new definitions build on: its
	// profiles and value sets are reused, and the result contains both.
	Base *rules.Set
}

// Compile compiles the roots of opts out of the given conformance resources
// (StructureDefinition, ValueSet, CodeSystem; Bundles of them are opened).
func Compile(resources []*fhir.Node, opts Options) (*rules.Set, error) {
	c := &compiler{
		opts:      opts,
		sds:       map[string]*fhir.Node{},
		vss:       map[string]*fhir.Node{},
		css:       map[string]*fhir.Node{},
		set:       &rules.Set{Profiles: map[string]*rules.Profile{}, ValueSets: map[string]*rules.ValueSet{}, Types: map[string]string{}},
		unchecked: map[string]bool{},
	}
	for _, u := range opts.Unchecked {
		c.unchecked[u] = true
	}
	if b := opts.Base; b != nil {
		for k, p := range b.Profiles {
			c.set.Profiles[k] = p
		}
		for k, vs := range b.ValueSets {
			c.set.ValueSets[k] = vs
		}
		for k, t := range b.Types {
			c.set.Types[k] = t
		}
		c.set.Notes = append(c.set.Notes, b.Notes...)
		c.set.ResourceTypes = append(c.set.ResourceTypes, b.ResourceTypes...)
	}
	for _, r := range resources {
		c.index(r)
	}
	types := map[string]bool{}
	for _, t := range c.set.ResourceTypes {
		types[t] = true
	}
	for url, sd := range c.sds {
		if sd.Str("kind") == "resource" && sd.Str("derivation") == "specialization" && url == CoreBase+sd.Str("type") && !types[sd.Str("type")] {
			types[sd.Str("type")] = true
			c.set.ResourceTypes = append(c.set.ResourceTypes, sd.Str("type"))
		}
	}
	sort.Strings(c.set.ResourceTypes)
	queue := append([]string(nil), opts.Roots...)
	seen := map[string]bool{}
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		if !strings.Contains(u, "/") {
			u = CoreBase + u
		}
		if seen[u] {
			continue
		}
		if opts.Base != nil && opts.Base.Profiles[u] != nil {
			continue
		}
		seen[u] = true
		sd := c.sds[u]
		if sd == nil {
			return nil, fmt.Errorf("compiling %s: no StructureDefinition with this url", u)
		}
		p, deps, err := c.profile(sd)
		if err != nil {
			return nil, fmt.Errorf("compiling %s: %w", u, err)
		}
		c.set.Profiles[u] = p
		if p.URL == CoreBase+p.Type {
			c.set.Types[p.Type] = p.URL
		}
		queue = append(queue, deps...)
	}
	return c.set, nil
}

type compiler struct {
	opts          Options
	sds, vss, css map[string]*fhir.Node
	set           *rules.Set
	unchecked     map[string]bool
	expanding     map[string]bool
}

func (c *compiler) index(r *fhir.Node) {
	if r == nil {
		return
	}
	switch r.ResourceType {
	case "Bundle":
		for _, e := range r.ChildrenNamed("entry") {
			c.index(e.Child("resource").Resource())
		}
	case "StructureDefinition":
		c.sds[r.Str("url")] = r
	case "ValueSet":
		c.vss[r.Str("url")] = r
	case "CodeSystem":
		c.css[r.Str("url")] = r
	}
}

// ignored are ElementDefinition properties that carry documentation or
// conformance intent but no instance rule.
var ignored = map[string]bool{
	"id": true, "extension": true, "path": true, "representation": true, "sliceName": true, "label": true,
	"code": true, "short": true, "definition": true, "comment": true, "requirements": true, "alias": true,
	"base": true, "condition": true, "mustSupport": true, "isModifier": true, "isSummary": true,
	"mapping": true, "example": true, "meaningWhenMissing": true, "orderMeaning": true,
}

func (c *compiler) profile(sd *fhir.Node) (*rules.Profile, []string, error) {
	p := &rules.Profile{URL: sd.Str("url"), Name: sd.Str("name"), Type: sd.Str("type"), Kind: sd.Str("kind")}
	if p.Name == "" {
		p.Name = sd.Str("id")
	}
	if p.Type == "" {
		return nil, nil, fmt.Errorf("no type")
	}
	for _, ctx := range sd.ChildrenNamed("context") {
		p.Context = append(p.Context, ctx.Value)
	}
	if len(p.Context) > 0 && sd.Str("contextType") != "resource" {
		return nil, nil, fmt.Errorf("extension contextType %q is not supported", sd.Str("contextType"))
	}
	snap := sd.Child("snapshot")
	if snap == nil {
		return nil, nil, fmt.Errorf("no snapshot (differential-only definitions are not supported)")
	}
	byID := map[string]*rules.Element{}
	var deps []string
	for i, en := range snap.ChildrenNamed("element") {
		e, d, err := c.element(p, en)
		if err != nil {
			return nil, nil, fmt.Errorf("element %d (%s): %w", i, en.Str("id"), err)
		}
		if e == nil {
			continue
		}
		deps = append(deps, d...)
		if i == 0 {
			p.Root = e
			byID[e.ID] = e
			continue
		}
		if _, dup := byID[e.ID]; dup {
			return nil, nil, fmt.Errorf("duplicate element id %s", e.ID)
		}
		byID[e.ID] = e
		cut := strings.LastIndexByte(e.ID, '.')
		if cut < 0 {
			return nil, nil, fmt.Errorf("element id %s has no parent", e.ID)
		}
		if e.SliceName != "" {
			last := e.ID[cut+1:]
			base := e.ID[:cut+1] + last[:strings.IndexByte(last, ':')]
			if strings.HasSuffix(base, "[x]") || byID[base] == nil {
				// Forge writes the sliced element under its renamed name.
				base = e.ID[:cut+1] + e.Name
			}
			sliced := byID[base]
			if sliced == nil {
				return nil, nil, fmt.Errorf("slice %s: no sliced element %s", e.ID, base)
			}
			if sliced.Slicing == nil {
				return nil, nil, fmt.Errorf("slice %s: element %s has no slicing", e.ID, base)
			}
			if sliced.SliceName != "" {
				return nil, nil, fmt.Errorf("slice %s: re-slicing is not supported", e.ID)
			}
			sliced.Slices = append(sliced.Slices, e)
			continue
		}
		parent := byID[e.ID[:cut]]
		if parent == nil {
			return nil, nil, fmt.Errorf("element %s: parent %s not found", e.ID, e.ID[:cut])
		}
		for _, s := range parent.Children {
			if s.Name == e.Name {
				return nil, nil, fmt.Errorf("element %s defined twice under %s", e.Name, parent.ID)
			}
		}
		parent.Children = append(parent.Children, e)
	}
	if p.Root == nil {
		return nil, nil, fmt.Errorf("empty snapshot")
	}
	if err := c.discriminate(p.Root); err != nil {
		return nil, nil, err
	}
	return p, deps, nil
}

// element compiles one ElementDefinition. It returns nil for the value
// element of a primitive type, which the validator checks natively.
func (c *compiler) element(p *rules.Profile, en *fhir.Node) (*rules.Element, []string, error) {
	path := en.Str("path")
	id := normID(en.Str("id"))
	if id == "" {
		id = path
	}
	if ni, np := strings.Count(id, "."), strings.Count(path, "."); ni < np {
		// Some Forge ids lose their leading segments
		// ("valueCodeableConcept:valueCodeableConcept.coding"): restore
		// them from the path.
		segs := strings.Split(path, ".")
		id = strings.Join(segs[:np-ni], ".") + "." + id
	}
	if strings.HasSuffix(path, ".value") && isPrimitiveValue(en) {
		// The value of a primitive (Patient.birthDate.value) is checked
		// natively by type; its definition carries only a regex extension.
		return nil, nil, nil
	}
	e := &rules.Element{ID: id, Path: path, SliceName: en.Str("sliceName")}
	e.Name = path[strings.LastIndexByte(path, '.')+1:]
	if bp := en.Str("base", "path"); bp != "" {
		bl := bp[strings.LastIndexByte(bp, '.')+1:]
		if strings.HasSuffix(bl, "[x]") && !strings.HasSuffix(e.Name, "[x]") && strings.HasPrefix(e.Name, strings.TrimSuffix(bl, "[x]")) {
			// Forge's renamed choice (valueCodeableConcept for value[x]):
			// the same element, restricted to the one type it names.
			if e.SliceName == e.Name {
				e.SliceName = ""
			}
			e.Name = bl
		}
	}
	var deps []string
	var err error
	if e.Min, err = atoi(en.Str("min"), 0); err != nil {
		return nil, nil, fmt.Errorf("min: %w", err)
	}
	if e.Max, err = maxOf(en.Str("max")); err != nil {
		return nil, nil, err
	}
	baseMax := en.Str("base", "max")
	if baseMax == "" {
		baseMax = en.Str("max")
	}
	bm, err := maxOf(baseMax)
	if err != nil {
		return nil, nil, err
	}
	e.Repeats = bm != 1 && bm != 0
	if strings.Count(path, ".") == 0 {
		e.Repeats = false
	}
	for _, ch := range en.Children {
		switch name := ch.Name; {
		case ignored[name]:
		case name == "min", name == "max":
		case name == "type":
			t := rules.Type{Code: ch.Str("code"), Profile: ch.Str("profile")}
			for _, tp := range ch.ChildrenNamed("targetProfile") {
				t.TargetProfiles = append(t.TargetProfiles, tp.Value)
			}
			if ag := ch.ChildrenNamed("aggregation"); len(ag) > 0 {
				return nil, nil, fmt.Errorf("type aggregation is not supported")
			}
			if t.Code == "" {
				return nil, nil, fmt.Errorf("type without code")
			}
			e.Types = append(e.Types, t)
			deps = append(deps, t.Code)
			if t.Profile != "" {
				deps = append(deps, t.Profile)
			}
		case name == "contentReference":
			e.ContentRef = strings.TrimPrefix(ch.Value, "#")
		case strings.HasPrefix(name, "fixed"):
			typ := lowerFirst(strings.TrimPrefix(name, "fixed"))
			if !ch.HasValue || len(ch.Children) > 0 && ch.Child("id") == nil {
				return nil, nil, fmt.Errorf("fixed value of complex type %s is not supported", typ)
			}
			e.Fixed = &rules.Fixed{Type: typ, Value: ch.Value}
		case strings.HasPrefix(name, "pattern"):
			return nil, nil, fmt.Errorf("%s is not supported", name)
		case strings.HasPrefix(name, "defaultValue"):
			// informational in a snapshot; a default is never validated.
		case name == "slicing":
			s := &rules.Slicing{Rules: ch.Str("rules"), Ordered: ch.Str("ordered") == "true"}
			for _, d := range ch.ChildrenNamed("discriminator") {
				if t := d.Str("type"); t != "value" {
					return nil, nil, fmt.Errorf("slicing discriminator type %q is not supported", t)
				}
				s.Discriminators = append(s.Discriminators, d.Str("path"))
			}
			switch s.Rules {
			case "open", "closed", "openAtEnd":
			default:
				return nil, nil, fmt.Errorf("slicing rules %q", s.Rules)
			}
			e.Slicing = s
		case name == "binding":
			b := &rules.Binding{Strength: ch.Str("strength")}
			b.ValueSet = ch.Str("valueSetReference", "reference")
			if b.ValueSet == "" {
				b.ValueSet = ch.Str("valueSetUri")
			}
			if i := strings.IndexByte(b.ValueSet, '|'); i >= 0 {
				b.ValueSet = b.ValueSet[:i]
			}
			switch b.Strength {
			case "required", "extensible":
				if b.ValueSet == "" {
					return nil, nil, fmt.Errorf("%s binding without a value set", b.Strength)
				}
				if err := c.valueSet(b.ValueSet); err != nil {
					if b.Strength == "required" {
						return nil, nil, fmt.Errorf("binding: %w", err)
					}
					// An extensible binding only ever warns; one we cannot
					// expand is listed in the set, not silently dropped.
					c.set.Notes = appendOnce(c.set.Notes, "extensible binding not checked: "+err.Error())
					continue
				}
				e.Binding = b
			case "preferred", "example":
				// guidance only
			default:
				return nil, nil, fmt.Errorf("binding strength %q", b.Strength)
			}
		case name == "constraint":
			key, expr := ch.Str("key"), ch.Str("expression")
			if key == "ele-1" || key == "ext-1" {
				// evaluated natively on every element and extension
				continue
			}
			if c.opts.Invariant == nil || !c.opts.Invariant(key, expr) {
				return nil, nil, fmt.Errorf("invariant %s (%s) has no native implementation", key, expr)
			}
			if sev := ch.Str("severity"); sev != "error" && sev != "warning" {
				return nil, nil, fmt.Errorf("invariant %s severity %q", key, sev)
			}
			e.Invariants = append(e.Invariants, rules.Invariant{Key: key, Severity: ch.Str("severity"), Human: ch.Str("human")})
		case name == "maxLength", strings.HasPrefix(name, "minValue"), strings.HasPrefix(name, "maxValue"):
			return nil, nil, fmt.Errorf("%s is not supported", name)
		default:
			return nil, nil, fmt.Errorf("element property %s is not supported", name)
		}
	}
	return e, deps, nil
}

// discriminate fills, for every sliced element, the value each slice
// expects on each discriminator path.
func (c *compiler) discriminate(e *rules.Element) error {
	if e.Slicing != nil && len(e.Slices) > 0 {
		if len(e.Slicing.Discriminators) == 0 {
			return fmt.Errorf("%s: slicing without discriminator", e.ID)
		}
		for _, s := range e.Slices {
			var vals []string
			for _, d := range e.Slicing.Discriminators {
				v, ok := fixedAt(s, d)
				if !ok {
					if s.Min > 0 {
						return fmt.Errorf("%s: slice %s has no fixed value on discriminator %s", e.ID, s.SliceName, d)
					}
					// A published defect (CareConnect snomedCT coding slices
					// without a fixed system): nothing can be assigned to
					// such a slice, and being optional it forbids nothing.
					c.set.Notes = appendOnce(c.set.Notes, fmt.Sprintf("slice %s has no fixed %s: never matched", s.ID, d))
					v = "\x00unmatchable"
				}
				vals = append(vals, v)
			}
			e.Slicing.Values = append(e.Slicing.Values, vals)
		}
	}
	for _, ch := range e.Children {
		if err := c.discriminate(ch); err != nil {
			return err
		}
	}
	for _, s := range e.Slices {
		if err := c.discriminate(s); err != nil {
			return err
		}
	}
	return nil
}

func fixedAt(s *rules.Element, path string) (string, bool) {
	cur := s
	for _, seg := range strings.Split(path, ".") {
		var next *rules.Element
		for _, ch := range cur.Children {
			if ch.Name == seg {
				next = ch
				break
			}
		}
		if next == nil {
			if seg == "url" && cur == s && len(s.Types) == 1 && s.Types[0].Code == "Extension" && s.Types[0].Profile != "" {
				// An extension slice is identified by its definition.
				return s.Types[0].Profile, true
			}
			return "", false
		}
		cur = next
	}
	if cur.Fixed == nil {
		return "", false
	}
	return cur.Fixed.Value, true
}

func atoi(s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	return strconv.Atoi(s)
}

func maxOf(s string) (int, error) {
	switch s {
	case "*":
		return rules.Unbounded, nil
	case "":
		return rules.Unbounded, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("max %q: %w", s, err)
	}
	return n, nil
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

// valueSet expands the value set at url into the set (once).
func (c *compiler) valueSet(url string) error {
	if _, ok := c.set.ValueSets[url]; ok {
		return nil
	}
	if c.expanding == nil {
		c.expanding = map[string]bool{}
	}
	if c.expanding[url] {
		return fmt.Errorf("value set %s includes itself", url)
	}
	c.expanding[url] = true
	defer delete(c.expanding, url)
	vs := &rules.ValueSet{URL: url, Codes: map[string][]string{}}
	node := c.vss[url]
	if node == nil {
		if c.unchecked[url] {
			vs.Unchecked = true
			c.set.ValueSets[url] = vs
			return nil
		}
		return fmt.Errorf("value set %s not found", url)
	}
	vs.Name = node.Str("name")
	codes := map[string]map[string]bool{}
	systems := map[string]bool{}
	addCode := func(sys, code string) {
		if codes[sys] == nil {
			codes[sys] = map[string]bool{}
		}
		codes[sys][code] = true
	}
	compose := node.Child("compose")
	if compose == nil {
		exp := node.Child("expansion")
		if exp == nil {
			return fmt.Errorf("value set %s has neither compose nor expansion", url)
		}
		var walk func(n *fhir.Node)
		walk = func(n *fhir.Node) {
			for _, ct := range n.ChildrenNamed("contains") {
				if ct.Str("code") != "" {
					addCode(ct.Str("system"), ct.Str("code"))
				}
				walk(ct)
			}
		}
		walk(exp)
	} else {
		for _, inc := range compose.ChildrenNamed("include") {
			sys := inc.Str("system")
			for _, sub := range inc.ChildrenNamed("valueSet") {
				if err := c.valueSet(sub.Value); err != nil {
					return fmt.Errorf("value set %s: %w", url, err)
				}
				sv := c.set.ValueSets[sub.Value]
				if sv.Unchecked {
					vs.Unchecked = true
				}
				for s, cs := range sv.Codes {
					for _, code := range cs {
						addCode(s, code)
					}
				}
				for _, s := range sv.Systems {
					systems[s] = true
				}
			}
			if sys == "" {
				continue
			}
			concepts := inc.ChildrenNamed("concept")
			switch {
			case len(concepts) > 0:
				for _, ct := range concepts {
					addCode(sys, ct.Str("code"))
				}
			case inc.Child("filter") != nil:
				// Intensional (SNOMED ECL, refsets): checked at system level.
				systems[sys] = true
			default:
				cs := c.css[sys]
				if cs == nil || cs.Str("content") != "" && cs.Str("content") != "complete" {
					systems[sys] = true
					continue
				}
				var walk func(n *fhir.Node)
				walk = func(n *fhir.Node) {
					for _, ct := range n.ChildrenNamed("concept") {
						addCode(sys, ct.Str("code"))
						walk(ct)
					}
				}
				walk(cs)
			}
		}
		for _, exc := range compose.ChildrenNamed("exclude") {
			sys := exc.Str("system")
			concepts := exc.ChildrenNamed("concept")
			if len(concepts) == 0 || exc.Child("valueSet") != nil {
				return fmt.Errorf("value set %s: exclude without explicit concepts is not supported", url)
			}
			for _, ct := range concepts {
				delete(codes[sys], ct.Str("code"))
			}
		}
	}
	for s, m := range codes {
		list := make([]string, 0, len(m))
		for code := range m {
			list = append(list, code)
		}
		sort.Strings(list)
		vs.Codes[s] = list
	}
	for s := range systems {
		vs.Systems = append(vs.Systems, s)
	}
	sort.Strings(vs.Systems)
	if len(vs.Codes) == 0 && len(vs.Systems) == 0 && !vs.Unchecked {
		return fmt.Errorf("value set %s expands to nothing", url)
	}
	c.set.ValueSets[url] = vs
	return nil
}

func appendOnce(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

func isPrimitiveValue(en *fhir.Node) bool {
	for _, t := range en.ChildrenNamed("type") {
		if t.Str("code") != "" {
			return false
		}
	}
	return true
}

// normID rewrites Forge's spellings of a renamed choice in an element id
// ("valueQuantity:valueQuantity", "value[x]:valueQuantity") to the plain
// renamed name, so that an element and its children agree on one id.
func normID(id string) string {
	if !strings.Contains(id, ":") {
		return id
	}
	segs := strings.Split(id, ".")
	for i, seg := range segs {
		a, b, ok := strings.Cut(seg, ":")
		if !ok {
			continue
		}
		if a == b {
			segs[i] = b
			continue
		}
		if pre, isChoice := strings.CutSuffix(a, "[x]"); isChoice && len(b) > len(pre) && strings.HasPrefix(b, pre) && b[len(pre)] >= 'A' && b[len(pre)] <= 'Z' {
			segs[i] = b
		}
	}
	return strings.Join(segs, ".")
}
