package fhir

import (
	"fmt"
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
	idx := map[string]int(nil)
	for _, k := range n.Children {
		c, ok := t.Child(k.Name)
		if !ok {
			fn(k, loc.Field(k.Name), nil, nil)
			continue
		}
		var kl Path
		if c.Element.Repeats() {
			if idx == nil {
				idx = map[string]int{}
			}
			kl = loc.Index(k.Name, idx[k.Name])
			idx[k.Name]++
		} else {
			kl = loc.Field(k.Name)
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
	Walk(root, func(n *Node, loc Path, el *Element, t *Type) bool {
		if t == nil || t.Kind == KindContainer || len(n.Children) < 2 {
			return true
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
				out = append(out, orderIssue(n, t, k, loc, fmt.Sprintf("element %s is out of order: it must come before %s", k.Name, t.Elements[maxOrder].Name)))
			case o == maxOrder && last != o:
				out = append(out, orderIssue(n, t, k, loc, fmt.Sprintf("repetitions of %s must be contiguous", k.Name)))
			default:
				maxOrder = o
			}
			last = o
		}
		return true
	})
	return out
}

func orderIssue(n *Node, t *Type, k *Node, loc Path, msg string) Issue {
	c, _ := t.Child(k.Name)
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
	Walk(root, func(n *Node, _ Path, _ *Element, t *Type) bool {
		if t != nil && t.Kind != KindContainer && len(n.Children) > 1 {
			sortChildren(n, t)
		}
		return true
	})
}
