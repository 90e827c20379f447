package profile

import (
	"strconv"
	"strings"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/profile/internal/invariant"
	"github.com/ems-broker/ems/fhir/profile/internal/rules"
)

// walker holds the state of one validation call.
type walker struct {
	v      *Validator
	issues []fhir.Issue
	seen   map[string]struct{}
	prof   *rules.Profile // the profile being checked, named in diagnostics
	env    invariant.Env
	full   bool
	// skipEntries leaves Bundle.entry.resource to the caller, which checks
	// each entry against its own profiles (ValidateBundle).
	skipEntries bool
	// names is the element path from the resource root ("Patient",
	// "identifier"), joined only when an extension context is checked.
	names []string
}

func (w *walker) add(sev fhir.Severity, code fhir.SpineCode, typ string, at fhir.Path, msg string) {
	if w.full {
		return
	}
	key := string(at) + "\x00" + msg
	if _, dup := w.seen[key]; dup {
		return
	}
	w.seen[key] = struct{}{}
	if len(w.issues) >= w.v.opts.MaxIssues {
		w.full = true
		w.issues = append(w.issues, fhir.Issue{Severity: fhir.SeverityInformation, Code: fhir.InvalidResource, IssueType: "too-costly",
			Diagnostics: "validation stopped after " + strconv.Itoa(w.v.opts.MaxIssues) + " issues"})
		return
	}
	w.issues = append(w.issues, fhir.Issue{Severity: sev, Code: code, IssueType: typ, Expression: string(at), Diagnostics: w.prof.Name + ": " + msg})
}

func (w *walker) errorf(typ string, at fhir.Path, msg string) {
	w.add(fhir.SeverityError, fhir.InvalidResource, typ, at, msg)
}

// resource checks a resource node against profile p.
func (w *walker) resource(n *fhir.Node, at fhir.Path, p *rules.Profile) {
	saved, savedNames := w.prof, w.names
	w.prof = p
	w.names = append(make([]string, 0, 16), p.Type)
	w.element(n, p.Root, p, p.Type, at)
	w.prof, w.names = saved, savedNames
}

// element checks node n against definition def (from profile sd) as type
// code typ.
func (w *walker) element(n *fhir.Node, def *rules.Element, sd *rules.Profile, typ string, at fhir.Path) {
	isResource := n.ResourceType != ""
	if !isResource && !n.HasValue && n.XHTML == "" && !hasContent(n) {
		w.add(fhir.SeverityError, fhir.FHIRConstraintViolation, "invariant", at, "ele-1: All FHIR elements must have a @value or children ("+def.ID+")")
	}
	if def.Fixed != nil && (!n.HasValue || n.Value != def.Fixed.Value) {
		w.errorf("value", at, def.ID+": value '"+n.Value+"' does not equal the fixed value '"+def.Fixed.Value+"'")
	}
	tsd := w.typeProfile(def, typ)
	primitive := tsd != nil && tsd.Kind == "primitive-type" || tsd == nil && isPrimitiveName(typ)
	if primitive && n.HasValue {
		if p := primitiveProblem(typ, n.Value); p != "" {
			w.errorf("value", at, def.ID+": '"+n.Value+"' is not a valid "+typ+": "+p)
		}
	}
	if def.Binding != nil {
		w.binding(n, def, typ, at)
	}
	if typ == "Reference" {
		w.reference(n, def, at)
	}
	if typ == "Extension" {
		hasExt, hasVal := n.Child("extension") != nil, false
		for _, c := range n.Children {
			if strings.HasPrefix(c.Name, "value") {
				hasVal = true
			}
		}
		if hasExt == hasVal {
			w.add(fhir.SeverityError, fhir.FHIRConstraintViolation, "invariant", at, "ext-1: Must have either extensions or value[x], not both ("+def.ID+")")
		}
	}
	// Children: from the snapshot when it unrolls them, else from the
	// content reference or the type's own definition.
	children, csd := def.Children, sd
	switch {
	case typ == "Extension" && tsd != nil && tsd.URL != w.v.set.Types["Extension"] && tsd != sd:
		// An extension's own definition is authoritative: profiles that
		// unroll an extension slice (CareConnect-EMS-Patient-1) drop the
		// sub-extension slices it defines.
		children, csd = tsd.Root.Children, tsd
		w.invariants(n, tsd.Root, at)
	case len(children) > 0:
	case def.ContentRef != "":
		if ref := w.v.byID[sd][def.ContentRef]; ref != nil {
			children = ref.Children
		}
	case tsd != nil:
		children, csd = tsd.Root.Children, tsd
		w.invariants(n, tsd.Root, at)
	}
	if isResource || len(children) > 0 || len(n.Children) > 0 {
		w.children(n, children, csd, at)
	}
	w.invariants(n, def, at)
}

func hasContent(n *fhir.Node) bool {
	for _, c := range n.Children {
		if c.Name != "id" {
			return true
		}
	}
	return false
}

func isPrimitiveName(t string) bool { return t != "" && t[0] >= 'a' && t[0] <= 'z' }

// typeProfile is the definition that describes the inside of an element of
// type typ: its type profile when it has a known one (an extension
// definition, SimpleQuantity), else the base definition of the type.
func (w *walker) typeProfile(def *rules.Element, typ string) *rules.Profile {
	for _, t := range def.Types {
		if t.Code == typ && t.Profile != "" {
			if p := w.v.set.Profiles[t.Profile]; p != nil {
				return p
			}
		}
	}
	return w.v.typeProfiles[typ]
}

func (w *walker) invariants(n *fhir.Node, def *rules.Element, at fhir.Path) {
	for _, inv := range def.Invariants {
		if invariant.Check(inv.Key, n, &w.env) {
			continue
		}
		sev := fhir.SeverityError
		if inv.Severity == "warning" {
			sev = fhir.SeverityWarning
		}
		w.add(sev, fhir.FHIRConstraintViolation, "invariant", at, inv.Key+": "+inv.Human+" ("+def.ID+")")
	}
}

// match is the definition a child node was assigned to.
type match struct {
	def *rules.Element
	typ string
}

// children checks the child nodes of n against the child definitions defs.
func (w *walker) children(n *fhir.Node, defs []*rules.Element, sd *rules.Profile, at fhir.Path) {
	var stackBuf [24]int
	assign := stackBuf[:0]
	if len(n.Children) > len(stackBuf) {
		assign = make([]int, 0, len(n.Children))
	}
	types := make([]string, len(n.Children))
	for i, c := range n.Children {
		d, typ, bad := w.lookup(defs, c.Name)
		if d < 0 {
			if n.ResourceType != "" && c.ResourceType != "" {
				d = -2 // a resource node's own name, handled by the caller
			} else {
				w.errorf("structure", childPath(at, c, false, n, i), "unknown element '"+c.Name+"'"+where(sd))
			}
		} else if bad != "" {
			w.errorf("structure", childPath(at, c, defs[d].Repeats, n, i), defs[d].ID+": type "+bad+" is not allowed here"+allowed(defs[d]))
			d = -2
		}
		assign = append(assign, d)
		types[i] = typ
	}
	for di, d := range defs {
		count := 0
		for _, a := range assign {
			if a == di {
				count++
			}
		}
		if count < d.Min {
			w.errorf("required", at, d.ID+" min "+strconv.Itoa(d.Min)+", found "+strconv.Itoa(count))
		}
		if count == 0 {
			for _, sl := range d.Slices {
				if sl.Min > 0 {
					w.errorf("required", at, sl.ID+" min "+strconv.Itoa(sl.Min)+", found 0")
				}
			}
			continue
		}
		if d.Max == 0 {
			for i, c := range n.Children {
				if assign[i] == di {
					w.errorf("structure", childPath(at, c, d.Repeats, n, i), d.ID+" is prohibited (max 0)")
				}
			}
			continue
		}
		if d.Max > 0 && count > d.Max {
			w.errorf("structure", at, d.ID+" max "+strconv.Itoa(d.Max)+", found "+strconv.Itoa(count))
		}
		if d.Slicing != nil && len(d.Slices) > 0 || d.Name == "extension" || d.Name == "modifierExtension" {
			// Extensions are always resolved by url, sliced or not.
			w.sliced(n, d, sd, di, assign, types, at)
			continue
		}
		for i, c := range n.Children {
			if assign[i] == di {
				w.child(n, c, i, d, sd, types[i], at)
			}
		}
	}
}

func where(sd *rules.Profile) string {
	if sd == nil {
		return ""
	}
	return " in " + sd.Type
}

func allowed(d *rules.Element) string {
	var b strings.Builder
	b.WriteString(" (allowed:")
	for _, t := range d.Types {
		b.WriteString(" " + t.Code)
	}
	b.WriteString(")")
	return b.String()
}

// child checks one matched child; resources inside containers are
// dispatched to their own base definition.
func (w *walker) child(parent, c *fhir.Node, i int, d *rules.Element, sd *rules.Profile, typ string, at fhir.Path) {
	loc := childPath(at, c, d.Repeats, parent, i)
	if typ == "Resource" || typ == "DomainResource" {
		w.container(c, d, loc)
		return
	}
	w.names = append(w.names, d.Name)
	w.element(c, d, sd, typ, loc)
	w.names = w.names[:len(w.names)-1]
}

// container checks an element holding a resource (Bundle.entry.resource,
// contained): exactly one resource, checked against its base definition.
func (w *walker) container(c *fhir.Node, d *rules.Element, loc fhir.Path) {
	var res *fhir.Node
	count := 0
	for _, r := range c.Children {
		if r.ResourceType != "" {
			res = r
			count++
		} else {
			w.errorf("structure", loc.Field(r.Name), "unknown element '"+r.Name+"' in "+d.ID)
		}
	}
	if count != 1 {
		w.errorf("structure", loc, d.ID+" must hold exactly one resource, found "+strconv.Itoa(count))
		return
	}
	if w.skipEntries && d.ID == "Bundle.entry.resource" {
		return
	}
	p := w.v.set.Profiles[w.v.set.Types[res.ResourceType]]
	if p == nil || p.Kind != "resource" {
		w.unsupported(res.ResourceType, loc)
		return
	}
	saved := w.env.Resource
	if d.Name != "contained" {
		w.env.Resource = res
	}
	w.resource(res, loc, p)
	w.env.Resource = saved
}

// childPath is the location of the i-th child of parent: indexed among
// its same-name siblings when the element repeats.
func childPath(at fhir.Path, c *fhir.Node, repeats bool, parent *fhir.Node, i int) fhir.Path {
	if !repeats {
		return at.Field(c.Name)
	}
	k := 0
	for _, s := range parent.Children[:i] {
		if s.Name == c.Name {
			k++
		}
	}
	return at.Index(c.Name, k)
}

// lookup finds the definition of the child named name: exact, or a choice
// element whose type suffix it carries. bad names a type the choice does
// not allow.
func (w *walker) lookup(defs []*rules.Element, name string) (idx int, typ, bad string) {
	for i, d := range defs {
		if d.Name == name {
			if len(d.Types) > 0 {
				return i, d.Types[0].Code, ""
			}
			return i, "", ""
		}
	}
	for i, d := range defs {
		base, ok := strings.CutSuffix(d.Name, "[x]")
		if !ok || !strings.HasPrefix(name, base) || len(name) == len(base) {
			continue
		}
		suffix := name[len(base):]
		if suffix[0] < 'A' || suffix[0] > 'Z' {
			continue
		}
		for _, t := range d.Types {
			if strings.EqualFold(t.Code, suffix) && (t.Code == suffix || isPrimitiveName(t.Code)) {
				return i, t.Code, ""
			}
		}
		if w.knownType(suffix) {
			return i, "", suffix
		}
	}
	return -1, "", ""
}

func (w *walker) knownType(suffix string) bool {
	if _, ok := w.v.set.Types[suffix]; ok {
		return true
	}
	_, ok := w.v.set.Types[strings.ToLower(suffix[:1])+suffix[1:]]
	return ok
}

// sliced assigns the repetitions of a sliced element to slices and checks
// slice cardinality, closed and ordered slicing.
func (w *walker) sliced(n *fhir.Node, d *rules.Element, sd *rules.Profile, di int, assign []int, types []string, at fhir.Path) {
	s := d.Slicing
	if s == nil {
		s = &noSlicing
	}
	counts := make([]int, len(d.Slices))
	lastSlice, sawUnmatched := -1, false
	for i, c := range n.Children {
		if assign[i] != di {
			continue
		}
		k := w.whichSlice(c, d)
		loc := childPath(at, c, d.Repeats, n, i)
		if k < 0 {
			sawUnmatched = true
			switch {
			case s.Rules == "closed":
				w.errorf("structure", loc, d.ID+": does not match any slice of a closed slicing ("+discriminatorText(c, s)+")")
			case d.Name == "extension" || d.Name == "modifierExtension":
				w.extension(n, c, d, sd, loc)
			default:
				w.names = append(w.names, d.Name)
				w.element(c, d, sd, types[i], loc)
				w.names = w.names[:len(w.names)-1]
			}
			continue
		}
		counts[k]++
		if s.Rules == "openAtEnd" && sawUnmatched {
			w.errorf("structure", loc, d.ID+": slice "+d.Slices[k].SliceName+" after unsliced content (openAtEnd)")
		}
		if s.Ordered && k < lastSlice {
			w.errorf("structure", loc, d.ID+": slice "+d.Slices[k].SliceName+" out of order (slicing is ordered)")
		}
		if k > lastSlice {
			lastSlice = k
		}
		typ := types[i]
		if sl := d.Slices[k]; len(sl.Types) > 0 && types[i] != "" {
			typ = sl.Types[0].Code
		}
		w.names = append(w.names, d.Name)
		w.element(c, d.Slices[k], sd, typ, loc)
		w.names = w.names[:len(w.names)-1]
	}
	for k, sl := range d.Slices {
		if counts[k] < sl.Min {
			w.errorf("required", at, sl.ID+" min "+strconv.Itoa(sl.Min)+", found "+strconv.Itoa(counts[k]))
		}
		if sl.Max >= 0 && counts[k] > sl.Max {
			if sl.Max == 0 {
				w.errorf("structure", at, sl.ID+" is prohibited (max 0), found "+strconv.Itoa(counts[k]))
			} else {
				w.errorf("structure", at, sl.ID+" max "+strconv.Itoa(sl.Max)+", found "+strconv.Itoa(counts[k]))
			}
		}
	}
}

func discriminatorText(c *fhir.Node, s *rules.Slicing) string {
	var parts []string
	for _, p := range s.Discriminators {
		parts = append(parts, p+"="+strings.Join(values(c, strings.Split(p, "."), nil), ","))
	}
	return strings.Join(parts, "; ")
}

// noSlicing stands for the slicing of an extension element a definition
// does not slice: every extension is then resolved by its url.
var noSlicing = rules.Slicing{Rules: "open"}

// whichSlice returns the first slice whose discriminator values all occur
// in c, or -1.
func (w *walker) whichSlice(c *fhir.Node, d *rules.Element) int {
	s := d.Slicing
	if s == nil {
		return -1
	}
	var buf [4]string
next:
	for k := range d.Slices {
		for j, p := range s.Discriminators {
			if !hasValueAt(c, p, s.Values[k][j], buf[:0]) {
				continue next
			}
		}
		return k
	}
	return -1
}

func hasValueAt(c *fhir.Node, path, want string, buf []string) bool {
	if !strings.Contains(path, ".") {
		for _, ch := range c.Children {
			if ch.Name == path && ch.Value == want {
				return true
			}
		}
		return false
	}
	for _, v := range values(c, strings.Split(path, "."), buf) {
		if v == want {
			return true
		}
	}
	return false
}

func values(n *fhir.Node, path []string, out []string) []string {
	if len(path) == 0 {
		if n.HasValue {
			out = append(out, n.Value)
		}
		return out
	}
	for _, c := range n.Children {
		if c.Name == path[0] {
			out = values(c, path[1:], out)
		}
	}
	return out
}

// extension checks an extension that no slice of the profile names: a known
// definition is applied with its context; an unknown url is a warning (an
// error on a modifierExtension, which a receiver may not ignore).
func (w *walker) extension(parent, c *fhir.Node, d *rules.Element, sd *rules.Profile, loc fhir.Path) {
	url := c.Str("url")
	ext := w.v.set.Profiles[url]
	if ext == nil || ext.Type != "Extension" {
		w.element(c, d, sd, "Extension", loc)
		if d.Name == "modifierExtension" {
			w.errorf("extension", loc, d.ID+": unknown modifier extension '"+url+"'")
		} else {
			w.add(fhir.SeverityWarning, fhir.InvalidResource, "extension", loc, d.ID+": unknown extension '"+url+"' not checked")
		}
		return
	}
	if host := strings.Join(w.names, "."); !contextAllows(ext, host, sd, parent) {
		w.errorf("extension", loc, ext.Name+" is not allowed on "+host+" (context "+strings.Join(ext.Context, ", ")+")")
	}
	w.element(c, ext.Root, ext, "Extension", loc)
}

// contextAllows checks an extension's declared context against where it
// is used: the path of the element holding it, or its type.
func contextAllows(ext *rules.Profile, host string, sd *rules.Profile, parent *fhir.Node) bool {
	if len(ext.Context) == 0 {
		return true
	}
	for _, c := range ext.Context {
		switch c {
		case "Element", "Resource", "DomainResource", host, sd.Type:
			return true
		}
		if parent.ResourceType != "" && c == parent.ResourceType {
			return true
		}
	}
	return false
}
