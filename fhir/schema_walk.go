package fhir

import (
	"fmt"
	"slices"
	"strings"
)

// WalkFunc is called for every element of a tree with its FHIRPath location
// (repeating elements indexed, "Bundle.entry[1].resource.name[0].given[0]"),
// its definition (nil for a resource) and its type. Returning false skips
// the element's children.
type WalkFunc func(n *Node, loc Path, el *Element, t *Type) bool

// Walk visits a resource tree depth-first in document order, resolving each
// element against the STU3 schema. Elements unknown to the schema (only
// possible in trees built in code) are visited with a nil Element and Type
// and their children are skipped.
func Walk(root *Node, fn WalkFunc) {
	if root == nil || root.ResourceType == "" {
		return
	}
	rt := LookupType(root.ResourceType)
	walk(root, Path(root.ResourceType), nil, rt, fn)
}

func walk(n *Node, loc Path, el *Element, t *Type, fn WalkFunc) {
	if !fn(n, loc, el, t) || t == nil {
		return
	}
	if t.Kind == KindContainer {
		for _, r := range n.Children {
			walk(r, loc, nil, LookupType(r.ResourceType), fn)
		}
		return
	}
	var ix siblingIndex
	for i, k := range n.Children {
		idx := ix.next(n.Children, i)
		c, ok := t.Child(k.Name)
		if !ok {
			fn(k, loc.Field(k.Name), nil, nil)
			continue
		}
		kl := loc.Field(k.Name)
		if c.Element.Repeats() {
			kl = loc.Index(k.Name, idx)
		}
		walk(k, kl, c.Element, c.Type, fn)
	}
}

// CheckElementOrder reports every element of an XML-decoded tree that is out
// of STU3 schema order (the XSD xs:sequence a publisher must follow): an
// element after one that the definition places later, or a repetition
// separated from the rest of its run. Attribute-represented elements (id,
// url) have no order and are skipped; choice alternatives share one slot.
// Trees from ParseJSON are always in order.
func CheckElementOrder(root *Node) []Issue {
	var out []Issue
	walkLazy(root, func(n *Node, t *Type, stack []frame) {
		if t.Kind == KindContainer || len(n.Children) < 2 {
			return
		}
		maxOrder, last := -1, -1
		for _, k := range n.Children {
			c, ok := t.Child(k.Name)
			if !ok || c.Element.Attr {
				continue
			}
			o := c.Element.Order
			switch {
			case o < maxOrder:
				out = append(out, orderIssue(n, t, k, stack, fmt.Sprintf("element %s is out of order: it must come before %s", k.Name, t.Elements[maxOrder].Name)))
			case o == maxOrder && last != o:
				out = append(out, orderIssue(n, t, k, stack, fmt.Sprintf("repetitions of %s must be contiguous", k.Name)))
			default:
				maxOrder = o
			}
			last = o
		}
	})
	return out
}

// walkLazy visits every node whose type is known, passing the stack of
// frames from the root instead of a location, so that a check that rarely
// reports pays for location text only when it does (stackPath).
func walkLazy(root *Node, fn func(n *Node, t *Type, stack []frame)) {
	if root == nil || root.ResourceType == "" {
		return
	}
	rt := LookupType(root.ResourceType)
	if rt == nil {
		return
	}
	stack := make([]frame, 0, 16)
	var visit func(n *Node, t *Type, el *Element)
	visit = func(n *Node, t *Type, el *Element) {
		stack = append(stack, frame{node: n, el: el, index: -1})
		fn(n, t, stack)
		if t.Kind == KindContainer {
			for _, r := range n.Children {
				if rt := LookupType(r.ResourceType); rt != nil {
					visit(r, rt, nil)
				}
			}
		} else {
			for _, k := range n.Children {
				if c, ok := t.Child(k.Name); ok && c.Type != nil {
					visit(k, c.Type, c.Element)
				}
			}
		}
		stack = stack[:len(stack)-1]
	}
	visit(root, rt, nil)
}

func orderIssue(n *Node, t *Type, k *Node, stack []frame, msg string) Issue {
	c, _ := t.Child(k.Name)
	loc := Path(stackPath(stack))
	kl := loc.Field(k.Name)
	if c.Element.Repeats() {
		kl = loc.Index(k.Name, n.IndexOf(k))
	}
	// Name the expected order of the elements actually present, which is
	// what a publisher needs to fix the document.
	var names []string
	for _, e := range t.Elements {
		if e.Attr {
			continue
		}
		for _, x := range n.Children {
			if xc, ok := t.Child(x.Name); ok && xc.Element == e {
				names = append(names, x.Name)
				break
			}
		}
	}
	where := ""
	if k.Line > 0 {
		where = fmt.Sprintf(" (line %d)", k.Line)
	}
	return Issue{
		Severity:    SeverityError,
		Code:        InvalidResource,
		IssueType:   "structure",
		Expression:  kl.String(),
		Diagnostics: fmt.Sprintf("%s%s; STU3 %s order is: %s", msg, where, typeLabel(t), strings.Join(names, ", ")),
	}
}

func typeLabel(t *Type) string {
	return t.Name
}

// SortElements puts every element of a tree into canonical order (XML
// attributes id and url first, then STU3 definition order, repetitions
// keeping their relative order), as ParseJSON does. The broker can use it to
// forward a publisher's out-of-order XML in valid order.
func SortElements(root *Node) {
	walkLazy(root, func(n *Node, t *Type, _ []frame) {
		if t.Kind != KindContainer && len(n.Children) > 1 {
			sortChildren(n, t)
		}
	})
}

// siblingIndex numbers children among same-named siblings in one pass:
// runs count up, and only a name that reappears after another run (an
// out-of-order tree) switches to a map, so hostile alternation stays linear.
type siblingIndex struct {
	prev   int
	seen   []string
	counts map[string]int
}

func (s *siblingIndex) next(kids []*Node, i int) int {
	name := kids[i].Name
	var idx int
	switch {
	case i > 0 && kids[i-1].Name == name:
		idx = s.prev + 1
	case s.counts != nil:
		idx = s.counts[name]
	case slices.Contains(s.seen, name):
		s.counts = make(map[string]int, len(s.seen))
		for _, k := range kids[:i] {
			s.counts[k.Name]++
		}
		idx = s.counts[name]
	default:
		s.seen = append(s.seen, name)
	}
	if s.counts != nil {
		s.counts[name] = idx + 1
	}
	s.prev = idx
	return idx
}
