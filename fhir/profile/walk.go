package profile

import (
	"math/bits"
	"slices"
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
	// names[nameBase:] is the element path from the resource root
	// ("Patient", "identifier"), joined only when an extension context is
	// checked. One slice serves the whole call; resource() moves nameBase.
	names    []string
	nameBase int
	root     fhir.Path // the location stack (loc.go)
	steps    []step
	// assign and counts are scratch stacks for children.
	assign []assigned
	counts []int
}

func (w *walker) add(sev fhir.Severity, code fhir.SpineCode, typ string, l loc, msg string) {
	if w.full {
		return
	}
	at := w.path(l)
	key := string(at) + "\x00" + msg
	if _, dup := w.seen[key]; dup {
		return
	}
	if w.seen == nil {
		w.seen = map[string]struct{}{}
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

func (w *walker) errorf(typ string, at loc, msg string) {
	w.add(fhir.SeverityError, fhir.InvalidResource, typ, at, msg)
}

// resource checks a resource node against profile p.
func (w *walker) resource(n *fhir.Node, at loc, p *profile) {
	saved, savedBase := w.prof, w.nameBase
	w.prof = p.Profile
	w.nameBase = len(w.names)
	w.names = append(w.names, p.Type)
	w.element(n, p.root, p, p.Type, at)
	w.names = w.names[:w.nameBase]
	w.prof, w.nameBase = saved, savedBase
}

// element checks node n against definition def (from profile sd) as type
// code typ.
func (w *walker) element(n *fhir.Node, def *elem, sd *profile, typ string, at loc) {
	isResource := n.ResourceType != ""
	if !isResource && !n.HasValue && n.XHTML == "" && !hasContent(n) {
		w.add(fhir.SeverityError, fhir.FHIRConstraintViolation, "invariant", at, "ele-1: All FHIR elements must have a @value or children ("+def.ID+")")
	}
	if def.Fixed != nil && (!n.HasValue || n.Value != def.Fixed.Value) {
		w.errorf("value", at, def.ID+": value '"+n.Value+"' does not equal the fixed value '"+def.Fixed.Value+"'")
	}
	tsd := w.v.typeProfile(def, typ)
	primitive := tsd != nil && tsd.primitive || tsd == nil && isPrimitiveName(typ)
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
	owner, csd := def, sd
	switch {
	case typ == "Extension" && tsd != nil && tsd.URL != w.v.extensionURL && tsd != sd:
		// An extension's own definition is authoritative: profiles that
		// unroll an extension slice (CareConnect-EMS-Patient-1) drop the
		// sub-extension slices it defines.
		owner, csd = tsd.root, tsd
		w.invariants(n, tsd.root, at)
	case len(def.kids) > 0:
	case def.ContentRef != "":
		if def.ref != nil {
			owner = def.ref
		}
	case tsd != nil:
		owner, csd = tsd.root, tsd
		w.invariants(n, tsd.root, at)
	}
	if isResource || len(owner.kids) > 0 || len(n.Children) > 0 {
		w.children(n, owner, csd, at)
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

func (w *walker) invariants(n *fhir.Node, def *elem, at loc) {
	for i := range def.invs {
		inv := &def.invs[i]
		if inv.fn(n, &w.env) {
			continue
		}
		sev := fhir.SeverityError
		if inv.Severity == "warning" {
			sev = fhir.SeverityWarning
		}
		w.add(sev, fhir.FHIRConstraintViolation, "invariant", at, inv.Key+": "+inv.Human+" ("+def.ID+")")
	}
}

// assigned is the definition a child node was matched to (an index into
// the owner's kids; -1 unknown, -2 reported or handled elsewhere) and the
// type it was matched as.
type assigned struct {
	d   int
	typ string
}

// children checks the child nodes of n against the child definitions of
// owner.
func (w *walker) children(n *fhir.Node, owner *elem, sd *profile, at loc) {
	defs, info := owner.kids, owner.kinfo
	// assign and counts live on the walker's scratch stacks: fixed arrays
	// here cost more to zero than the matching itself.
	aBase, cBase := len(w.assign), len(w.counts)
	w.assign = slices.Grow(w.assign, len(n.Children))
	assign := w.assign[aBase : aBase+len(n.Children)]
	w.assign = w.assign[:aBase+len(n.Children)]
	w.counts = slices.Grow(w.counts, len(defs))
	counts := w.counts[cBase : cBase+len(defs)]
	w.counts = w.counts[:cBase+len(defs)]
	clear(counts)
	var present uint64 // bit di: counts[di] > 0 (when there are at most 64)
	for i, c := range n.Children {
		d, typ, bad := w.v.lookup(owner, c.Name)
		if d < 0 {
			if n.ResourceType != "" && c.ResourceType != "" {
				d = -2 // a resource node's own name, handled by the caller
			} else {
				l := w.childLoc(at, n, i, false)
				w.errorf("structure", l, "unknown element '"+c.Name+"'"+where(sd))
			}
		} else if bad != "" {
			l := w.childLoc(at, n, i, info[d].repeats)
			w.errorf("structure", l, defs[d].ID+": type "+bad+" is not allowed here"+allowed(defs[d]))
			d = -2
		} else {
			counts[d]++
			present |= 1 << (d & 63)
		}
		assign[i] = assigned{d, typ}
	}
	if len(info) <= 64 {
		// Only the definitions present or required need a look: visit
		// their bits in definition order.
		for m := present | owner.required; m != 0; m &= m - 1 {
			w.kid(n, owner, bits.TrailingZeros64(m), counts, assign, sd, at)
		}
	} else {
		for di := range info {
			if counts[di] > 0 || info[di].required {
				w.kid(n, owner, di, counts, assign, sd, at)
			}
		}
	}
	w.assign, w.counts = w.assign[:aBase], w.counts[:cBase]
}

// kid checks the children of n matched to owner.kids[di]: cardinality,
// then each of them, through the slicing when there is one.
func (w *walker) kid(n *fhir.Node, owner *elem, di int, counts []int, assign []assigned, sd *profile, at loc) {
	count, k, d := counts[di], &owner.kinfo[di], owner.kids[di]
	if count < k.min {
		w.errorf("required", at, d.ID+" min "+strconv.Itoa(k.min)+", found "+strconv.Itoa(count))
	}
	if count == 0 {
		for _, sl := range d.Slices {
			if sl.Min > 0 {
				w.errorf("required", at, sl.ID+" min "+strconv.Itoa(sl.Min)+", found 0")
			}
		}
		return
	}
	if k.max == 0 {
		for i := range n.Children {
			if assign[i].d == di {
				l := w.childLoc(at, n, i, k.repeats)
				w.errorf("structure", l, d.ID+" is prohibited (max 0)")
			}
		}
		return
	}
	if k.max > 0 && count > k.max {
		w.errorf("structure", at, d.ID+" max "+strconv.Itoa(k.max)+", found "+strconv.Itoa(count))
	}
	if k.sliced {
		// Extensions are always resolved by url, sliced or not.
		w.sliced(n, d, sd, di, assign, at)
		return
	}
	for i, c := range n.Children {
		if assign[i].d == di {
			w.child(n, c, i, d, sd, assign[i].typ, at)
		}
	}
}

func where(sd *profile) string {
	if sd == nil {
		return ""
	}
	return " in " + sd.Type
}

func allowed(d *elem) string {
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
func (w *walker) child(parent, c *fhir.Node, i int, d *elem, sd *profile, typ string, at loc) {
	l := w.childLoc(at, parent, i, d.Repeats)
	if typ == "Resource" || typ == "DomainResource" {
		w.container(c, d, l)
		return
	}
	w.names = append(w.names, d.Name)
	w.element(c, d, sd, typ, l)
	w.names = w.names[:len(w.names)-1]
}

// container checks an element holding a resource (Bundle.entry.resource,
// contained): exactly one resource, checked against its base definition.
func (w *walker) container(c *fhir.Node, d *elem, at loc) {
	var res *fhir.Node
	count := 0
	for _, r := range c.Children {
		if r.ResourceType != "" {
			res = r
			count++
		} else {
			l := w.field(at, r.Name)
			w.errorf("structure", l, "unknown element '"+r.Name+"' in "+d.ID)
		}
	}
	if count != 1 {
		w.errorf("structure", at, d.ID+" must hold exactly one resource, found "+strconv.Itoa(count))
		return
	}
	if w.skipEntries && d.ID == "Bundle.entry.resource" {
		return
	}
	p := w.v.profiles[w.v.set.Types[res.ResourceType]]
	if p == nil || p.Kind != "resource" {
		w.unsupported(res.ResourceType, at)
		return
	}
	saved := w.env.Resource
	if d.Name != "contained" {
		w.env.Resource = res
	}
	w.resource(res, at, p)
	w.env.Resource = saved
}

// sliced assigns the repetitions of a sliced element to slices and checks
// slice cardinality, closed and ordered slicing.
func (w *walker) sliced(n *fhir.Node, d *elem, sd *profile, di int, assign []assigned, at loc) {
	s := d.Slicing
	if s == nil {
		s = &noSlicing
	}
	var countBuf [16]int
	counts := countBuf[:0]
	if len(d.slices) > len(countBuf) {
		counts = make([]int, len(d.slices))
	} else {
		counts = countBuf[:len(d.slices)]
	}
	lastSlice, sawUnmatched := -1, false
	for i, c := range n.Children {
		if assign[i].d != di {
			continue
		}
		k := whichSlice(c, d)
		l := w.childLoc(at, n, i, d.Repeats)
		if k < 0 {
			sawUnmatched = true
			switch {
			case s.Rules == "closed":
				w.errorf("structure", l, d.ID+": does not match any slice of a closed slicing ("+discriminatorText(c, s)+")")
			case d.Name == "extension" || d.Name == "modifierExtension":
				w.extension(n, c, d, sd, l)
			default:
				w.names = append(w.names, d.Name)
				w.element(c, d, sd, assign[i].typ, l)
				w.names = w.names[:len(w.names)-1]
			}
			continue
		}
		counts[k]++
		if s.Rules == "openAtEnd" && sawUnmatched {
			w.errorf("structure", l, d.ID+": slice "+d.Slices[k].SliceName+" after unsliced content (openAtEnd)")
		}
		if s.Ordered && k < lastSlice {
			w.errorf("structure", l, d.ID+": slice "+d.Slices[k].SliceName+" out of order (slicing is ordered)")
		}
		if k > lastSlice {
			lastSlice = k
		}
		typ := assign[i].typ
		if sl := d.slices[k]; len(sl.Types) > 0 && typ != "" {
			typ = sl.Types[0].Code
		}
		w.names = append(w.names, d.Name)
		w.element(c, d.slices[k], sd, typ, l)
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
func whichSlice(c *fhir.Node, d *elem) int {
	s := d.Slicing
	if s == nil {
		return -1
	}
next:
	for k := range d.slices {
		for j, p := range d.discs {
			if !hasValueAt(c, p, s.Values[k][j]) {
				continue next
			}
		}
		return k
	}
	return -1
}

// hasValueAt tells whether c has the value want at path: a direct child
// of that name with that value, or for a dotted path any element along it
// (any repetition) holding that value.
func hasValueAt(c *fhir.Node, path []string, want string) bool {
	if len(path) == 1 {
		for _, ch := range c.Children {
			if ch.Name == path[0] && ch.Value == want {
				return true
			}
		}
		return false
	}
	return hasValueAlong(c, path, want)
}

func hasValueAlong(n *fhir.Node, path []string, want string) bool {
	if len(path) == 0 {
		return n.HasValue && n.Value == want
	}
	for _, c := range n.Children {
		if c.Name == path[0] && hasValueAlong(c, path[1:], want) {
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
func (w *walker) extension(parent, c *fhir.Node, d *elem, sd *profile, at loc) {
	url := c.Str("url")
	ext := w.v.profiles[url]
	if ext == nil || ext.Type != "Extension" {
		w.element(c, d, sd, "Extension", at)
		if d.Name == "modifierExtension" {
			w.errorf("extension", at, d.ID+": unknown modifier extension '"+url+"'")
		} else {
			w.add(fhir.SeverityWarning, fhir.InvalidResource, "extension", at, d.ID+": unknown extension '"+url+"' not checked")
		}
		return
	}
	if len(ext.Context) > 0 {
		if host := strings.Join(w.names[w.nameBase:], "."); !contextAllows(ext, host, sd, parent) {
			w.errorf("extension", at, ext.Name+" is not allowed on "+host+" (context "+strings.Join(ext.Context, ", ")+")")
		}
	}
	w.element(c, ext.root, ext, "Extension", at)
}

// contextAllows checks an extension's declared context against where it
// is used: the path of the element holding it, or its type.
func contextAllows(ext *profile, host string, sd *profile, parent *fhir.Node) bool {
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
