// Package fhir holds what the broker, the subscription store and delivery all
// need to know about FHIR STU3: a lossless generic element tree, the XML and
// JSON codecs that fill and write it, OperationOutcome construction, and the
// wire contract of a stored event (subject scheme and header names).
//
// The tree is deliberately generic rather than a generated struct per
// resource: the broker must forward a bundle unchanged, round-trip it between
// XML and JSON without losing an extension or a decimal digit, and report the
// location of any fault; a generic tree does all three with one code path.
package fhir

import (
	"strconv"
	"strings"
)

// Node is one FHIR element. A resource is a Node whose ResourceType is set;
// it is the child of a container element (Bundle.entry.resource,
// DomainResource.contained, Parameters.parameter.resource) or the root.
//
// Repeating elements appear as consecutive children with the same Name, in
// document order, exactly as in FHIR XML. Whether an element repeats in JSON
// (an array) is decided by the STU3 definitions, not by how many children
// happen to be present.
type Node struct {
	// Name is the element name as it appears in XML and JSON, including the
	// type suffix of a choice element ("valueQuantity"). For the root
	// resource it is the resource type.
	Name string

	// ResourceType is set when this node is a resource ("Patient").
	ResourceType string

	// Value is the lexical value of a primitive exactly as received (a
	// decimal keeps its digits, "1.50" stays "1.50"). HasValue tells an
	// absent value from an empty one, which FHIR forbids but which we must
	// still be able to report.
	Value    string
	HasValue bool

	// XHTML holds the raw XHTML of a Narrative.div (namespace included),
	// kept as text so it round-trips unchanged.
	XHTML string

	// Children are the child elements in document order. The element id and
	// an extension's url are held here too, as children named "id" and
	// "url", because JSON treats them as ordinary properties; the XML codec
	// writes them as attributes.
	Children []*Node

	// Line and Col locate the element in the source document (1-based; zero
	// when the node was built in code). They make parser and validator
	// diagnostics point at the publisher's own file.
	Line, Col int
}

// Child returns the first child with the given name, or nil.
func (n *Node) Child(name string) *Node {
	if n == nil {
		return nil
	}
	for _, c := range n.Children {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// ChildrenNamed returns every child with the given name, in document order.
func (n *Node) ChildrenNamed(name string) []*Node {
	if n == nil {
		return nil
	}
	var out []*Node
	for _, c := range n.Children {
		if c.Name == name {
			out = append(out, c)
		}
	}
	return out
}

// Get follows a dotted path of child names, taking the first match at each
// step: n.Get("meta", "lastUpdated").
func (n *Node) Get(path ...string) *Node {
	cur := n
	for _, p := range path {
		cur = cur.Child(p)
		if cur == nil {
			return nil
		}
	}
	return cur
}

// Str returns the primitive value of the child at path, or "".
func (n *Node) Str(path ...string) string {
	if c := n.Get(path...); c != nil {
		return c.Value
	}
	return ""
}

// Resource returns the resource held by a container element such as
// Bundle.entry.resource, or nil.
func (n *Node) Resource() *Node {
	if n == nil {
		return nil
	}
	if n.ResourceType != "" {
		return n
	}
	for _, c := range n.Children {
		if c.ResourceType != "" {
			return c
		}
	}
	return nil
}

// Extensions returns the extension (not modifierExtension) children whose url
// equals url.
func (n *Node) Extensions(url string) []*Node {
	var out []*Node
	for _, c := range n.ChildrenNamed("extension") {
		if c.Str("url") == url {
			out = append(out, c)
		}
	}
	return out
}

// Extension returns the first extension with the given url, or nil.
func (n *Node) Extension(url string) *Node {
	for _, c := range n.ChildrenNamed("extension") {
		if c.Str("url") == url {
			return c
		}
	}
	return nil
}

// Path builds FHIRPath-style locations such as
// "Bundle.entry[2].resource.identifier[0].value" while walking a tree. It is
// a value type so that each recursion level can extend its parent cheaply.
type Path string

// Field appends a non-repeating element name.
func (p Path) Field(name string) Path {
	if p == "" {
		return Path(name)
	}
	return Path(string(p) + "." + name)
}

// Index appends a repeating element name with its zero-based index among
// siblings of the same name.
func (p Path) Index(name string, i int) Path {
	return p.Field(name + "[" + strconv.Itoa(i) + "]")
}

// String returns the location text.
func (p Path) String() string { return string(p) }

// IndexOf returns the zero-based position of child among n's children that
// share its name, or -1.
func (n *Node) IndexOf(child *Node) int {
	i := 0
	for _, c := range n.Children {
		if c == child {
			return i
		}
		if c.Name == child.Name {
			i++
		}
	}
	return -1
}

// TrimIndexZero turns "a[0].b[0]" into "a.b" for diagnostics that read
// better without indexes; locations in OperationOutcome keep them.
func TrimIndexZero(p string) string { return strings.ReplaceAll(p, "[0]", "") }
