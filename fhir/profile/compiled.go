package profile

import (
	"strings"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/profile/internal/invariant"
	"github.com/ems-broker/ems/fhir/profile/internal/rules"
)

// profile is a compiled profile with its element tree resolved for the
// walker (see elem).
type profile struct {
	*rules.Profile
	root      *elem
	primitive bool // Kind == "primitive-type"
}

// elem is a rules.Element with what the walker needs at every instance
// element worked out once, when the Validator is built: the child names to
// match against, the type profiles, the reference targets, the value set and
// the invariant functions. Resolving them per element (map lookups on long
// URLs, string splitting) was most of the cost of validating a message.
type elem struct {
	// A copy, not a pointer: one less cache line to fetch per element.
	rules.Element
	kids   []*elem // Children
	slices []*elem // Slices
	// kinfo summarises the kids for the children loop, contiguous so that
	// matching a node's children touches one array, not every definition.
	kinfo []kidInfo
	// required has bit i set when kinfo[i].required (lists of at most 64).
	required uint64
	// names are the kids' names; keys[i] packs the length and the first
	// and last bytes of names[i], so that the lookup compares strings only
	// when a cheap integer matches. choices are the kids whose name is a
	// choice (value[x]), with the name's base (value).
	names   []string
	keys    []uint32
	choices []choiceKid
	// typeProfs[i] is the profile of Types[i] when it names a known one
	// (an extension definition, SimpleQuantity), baseProfs[i] the base
	// definition of its code.
	typeProfs []*profile
	baseProfs []*profile
	// code0 and prof0 are Types[0].Code and its typeProfile, the answer
	// for most elements, kept inline.
	code0 string
	prof0 *profile
	// byType answers typeProfile for an element of many types (a choice
	// such as Extension.value[x]) without comparing every type code.
	byType map[string]*profile
	// ref is the element a ContentRef names, in the same profile.
	ref *elem
	// targets are the resource types a Reference may point at (see
	// Validator.targets).
	targets []string
	vs      *valueSet
	invs    []invariantFunc
	// discs are the slicing discriminator paths split on dots.
	discs [][]string
}

// kidInfo is what the children loop needs of a child definition.
type kidInfo struct {
	min, max int
	typ      string // Types[0].Code, the type an exactly named child has
	// required: min > 0 or a slice with min > 0 (checked when absent).
	// sliced: matched through slices (sliced or an extension element).
	required, repeats, sliced bool
}

// byTypeMin is the number of types above which an element gets a byType
// map.
const byTypeMin = 6

func nameKey(s string) uint32 {
	if s == "" {
		return 0
	}
	return uint32(len(s))<<16 | uint32(s[0])<<8 | uint32(s[len(s)-1])
}

type choiceKid struct {
	i    int
	base string
}

type invariantFunc struct {
	rules.Invariant
	fn func(n *fhir.Node, env *invariant.Env) bool
}

// compileProfiles wraps every profile of the set; it runs after v.vs is
// filled.
func (v *Validator) compileProfiles() {
	v.profiles = make(map[string]*profile, len(v.set.Profiles))
	for url, p := range v.set.Profiles {
		v.profiles[url] = &profile{Profile: p, primitive: p.Kind == "primitive-type"}
	}
	v.typeProfiles = make(map[string]*profile, len(v.set.Types))
	for code, url := range v.set.Types {
		if p := v.profiles[url]; p != nil && url != "" {
			v.typeProfiles[code] = p
		}
	}
	// One slab holds every elem: eleven thousand separate allocations of
	// a few hundred bytes were most of the cost of building them.
	total := 0
	for _, p := range v.set.Profiles {
		total += countElems(p.Root)
	}
	v.slab = make([]elem, 0, total)
	for _, p := range v.profiles {
		byID := make(map[string]*elem, countElems(p.Root))
		p.root = v.compileElem(p.Root, byID)
		// Content references resolve in the profile that holds them, as
		// the walker's byID[sd] lookup did.
		var link func(e *elem)
		link = func(e *elem) {
			if e.ContentRef != "" {
				e.ref = byID[e.ContentRef]
			}
			for _, c := range e.kids {
				link(c)
			}
			for _, c := range e.slices {
				link(c)
			}
		}
		link(p.root)
	}
}

func countElems(e *rules.Element) int {
	n := 1
	for _, c := range e.Children {
		n += countElems(c)
	}
	for _, c := range e.Slices {
		n += countElems(c)
	}
	return n
}

func (v *Validator) compileElem(r *rules.Element, byID map[string]*elem) *elem {
	var e *elem
	if len(v.slab) < cap(v.slab) {
		v.slab = append(v.slab, elem{Element: *r})
		e = &v.slab[len(v.slab)-1]
	} else {
		e = &elem{Element: *r}
	}
	byID[r.ID] = e
	if len(r.Children) > 0 {
		e.kids = make([]*elem, len(r.Children))
		e.names = make([]string, len(r.Children))
		e.keys = make([]uint32, len(r.Children))
		e.kinfo = make([]kidInfo, len(r.Children))
		for i, c := range r.Children {
			e.kids[i] = v.compileElem(c, byID)
			e.names[i] = c.Name
			e.keys[i] = nameKey(c.Name)
			if base, ok := strings.CutSuffix(c.Name, "[x]"); ok {
				e.choices = append(e.choices, choiceKid{i, base})
			}
			k := kidInfo{min: c.Min, max: c.Max, repeats: c.Repeats, required: c.Min > 0,
				sliced: c.Slicing != nil && len(c.Slices) > 0 || c.Name == "extension" || c.Name == "modifierExtension"}
			if len(c.Types) > 0 {
				k.typ = c.Types[0].Code
			}
			for _, sl := range c.Slices {
				if sl.Min > 0 {
					k.required = true
				}
			}
			e.kinfo[i] = k
			if k.required && i < 64 {
				e.required |= 1 << i
			}
		}
	}
	if len(r.Slices) > 0 {
		e.slices = make([]*elem, len(r.Slices))
		for i, c := range r.Slices {
			e.slices[i] = v.compileElem(c, byID)
		}
	}
	if len(r.Types) > 0 {
		e.typeProfs = make([]*profile, len(r.Types))
		e.baseProfs = make([]*profile, len(r.Types))
		for i, t := range r.Types {
			if t.Profile != "" {
				e.typeProfs[i] = v.profiles[t.Profile]
			}
			e.baseProfs[i] = v.typeProfiles[t.Code]
		}
		e.code0, e.prof0 = r.Types[0].Code, v.typeProfile(e, r.Types[0].Code)
		if len(r.Types) > byTypeMin {
			e.byType = make(map[string]*profile, len(r.Types))
			for _, t := range r.Types {
				if _, done := e.byType[t.Code]; !done {
					e.byType[t.Code] = v.typeProfile(e, t.Code)
				}
			}
		}
	}
	e.targets = v.targets(r)
	if r.Binding != nil {
		e.vs = v.vs[r.Binding.ValueSet]
	}
	for _, inv := range r.Invariants {
		fn := invariant.Func(inv.Key)
		if fn == nil {
			key := inv.Key
			fn = func(n *fhir.Node, env *invariant.Env) bool { return invariant.Check(key, n, env) } // panics, as before
		}
		e.invs = append(e.invs, invariantFunc{inv, fn})
	}
	if r.Slicing != nil {
		for _, d := range r.Slicing.Discriminators {
			e.discs = append(e.discs, strings.Split(d, "."))
		}
	}
	return e
}

// lookup finds the definition of the child named name among e's kids:
// exact, or a choice element whose type suffix it carries. bad names a type
// the choice does not allow.
func (v *Validator) lookup(e *elem, name string) (idx int, typ, bad string) {
	key := nameKey(name)
	for i, k := range e.keys {
		if k == key && e.names[i] == name {
			return i, e.kinfo[i].typ, ""
		}
	}
	for _, ch := range e.choices {
		base := ch.base
		if !strings.HasPrefix(name, base) || len(name) == len(base) {
			continue
		}
		suffix := name[len(base):]
		if suffix[0] < 'A' || suffix[0] > 'Z' {
			continue
		}
		for _, t := range e.kids[ch.i].Types {
			if strings.EqualFold(t.Code, suffix) && (t.Code == suffix || isPrimitiveName(t.Code)) {
				return ch.i, t.Code, ""
			}
		}
		if v.knownType(suffix) {
			return ch.i, "", suffix
		}
	}
	return -1, "", ""
}

func (v *Validator) knownType(suffix string) bool {
	if _, ok := v.set.Types[suffix]; ok {
		return true
	}
	_, ok := v.set.Types[strings.ToLower(suffix[:1])+suffix[1:]]
	return ok
}

// typeProfile is the definition that describes the inside of an element of
// type typ: its type profile when it has a known one (an extension
// definition, SimpleQuantity), else the base definition of the type.
func (v *Validator) typeProfile(def *elem, typ string) *profile {
	if def.prof0 != nil && typ == def.code0 {
		return def.prof0
	}
	if def.byType != nil {
		if p, ok := def.byType[typ]; ok {
			return p
		}
		return v.typeProfiles[typ]
	}
	base := -1
	for i := range def.Types {
		if def.Types[i].Code == typ {
			if p := def.typeProfs[i]; p != nil {
				return p
			}
			if base < 0 {
				base = i
			}
		}
	}
	if base >= 0 {
		return def.baseProfs[base]
	}
	return v.typeProfiles[typ]
}

// targets lists the resource types a Reference element may point at.
func (v *Validator) targets(def *rules.Element) []string {
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
			if p := v.set.Profiles[tp]; p != nil {
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
