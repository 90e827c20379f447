package fhir

import (
	_ "embed"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
)

//go:generate go run ./internal/schemagen -in ../../shared/conformance/stu3-core -out definitions/stu3.schema

// stu3Schema is the element table compiled from the STU3 core
// StructureDefinitions by internal/schemagen (167 KB instead of the 21 MB of
// JSON it is made from; parsed once, lazily, in about 5 ms).
//
//go:embed definitions/stu3.schema
var stu3Schema string

// TypeKind says how a type is represented on the wire.
type TypeKind uint8

// Kinds of type.
const (
	// KindPrimitive: a value attribute in XML, a JSON string/number/boolean
	// (plus a "_name" object for its id and extensions).
	KindPrimitive TypeKind = iota + 1
	// KindComplex: a datatype such as HumanName.
	KindComplex
	// KindBackbone: an element defined inline in its parent (Bundle.entry).
	KindBackbone
	// KindResource: a resource type such as Patient.
	KindResource
	// KindContainer: the type "Resource" of Bundle.entry.resource and
	// DomainResource.contained: the element holds exactly one resource,
	// named by its type in XML and by resourceType in JSON.
	KindContainer
)

// JSONKind is how a primitive value is written in JSON.
type JSONKind uint8

// JSON kinds of primitive values.
const (
	JSONString JSONKind = iota
	JSONNumber
	JSONBoolean
)

// Type is a resource type, datatype or backbone element with its child
// elements in STU3 definition order (which is the XML schema xs:sequence
// order).
type Type struct {
	// Name is the type name ("Patient", "HumanName", "decimal") or, for a
	// backbone element, its definition path ("Bundle.entry").
	Name     string
	Kind     TypeKind
	Abstract bool
	// JSON is the JSON representation of a primitive's value.
	JSON JSONKind
	// Elements are the child elements in definition order; Element.Order is
	// the index into this slice.
	Elements []*Element

	// children maps every wire name (choice elements expanded:
	// valueQuantity, valueString ...) to its definition and type.
	children map[string]Child
	// slots holds the same entries as an open-addressed table (linear
	// probing, empty Name for a free slot, at most half full) indexed by
	// childHash >> shift: a lookup per element of every parse, order check
	// and walk, which a cheap hash of a few bytes serves faster than the
	// map's hash of the whole name. The table is built from the schema
	// alone, so no input can lengthen its probe sequences.
	slots []Child
	shift uint8
}

// Element is one child element definition.
type Element struct {
	// Name is the element name; for a choice element it is the name
	// without "[x]" ("value") and Choice is set.
	Name   string
	Choice bool
	// Order is the element's position in its parent's definition: in XML
	// the children of an element must appear in ascending Order, and
	// repetitions of one element (or the alternatives of one choice) share
	// one Order and must be contiguous.
	Order int
	Min   int
	// Max is the maximum cardinality, -1 for "*".
	Max int
	// Attr is set for elements written as XML attributes (Element.id,
	// Extension.url).
	Attr bool
	// Types are the type codes as declared (a backbone element's type is
	// its own definition path).
	Types []string
	types []*Type
}

// Repeats reports whether the element may occur more than once; such an
// element is a JSON array (whatever the count present) and is indexed in
// FHIRPath locations.
func (e *Element) Repeats() bool { return e.Max < 0 || e.Max > 1 }

// Child is the definition of one wire name within a type.
type Child struct {
	// Name is the wire name, interned ("valueQuantity").
	Name    string
	Element *Element
	// Type is the concrete type of this wire name; for a choice element it
	// is the alternative the suffix names.
	Type *Type
	// TypeCode is the declared type code ("SimpleQuantity", "Age"), which
	// can differ from Type.Name for constrained types.
	TypeCode string
}

// Child returns the definition of the child element with the given wire
// name.
func (t *Type) Child(name string) (Child, bool) { return lookupChild(t, name) }

// childBytes is Child for a name in a byte slice (no string is made).
func (t *Type) childBytes(name []byte) (Child, bool) { return lookupChild(t, name) }

// lookupChild probes t's open-addressed child table.
func lookupChild[S string | []byte](t *Type, name S) (Child, bool) {
	if t == nil || len(t.slots) == 0 || len(name) == 0 {
		return Child{}, false
	}
	n := len(name)
	mask := uint32(len(t.slots) - 1)
	i := childHash(n, name[0], name[n/2], name[n-1]) >> t.shift
	for {
		c := &t.slots[i]
		if c.Name == string(name) {
			return *c, true
		}
		if c.Name == "" {
			return Child{}, false
		}
		i = (i + 1) & mask
	}
}

// childHash hashes a wire name from its length and three of its bytes
// (names of one type differ in length or in one of them far more often
// than not: valueString, valueQuantity); the top bits of the product,
// shifted by Type.shift, index the slot table.
func childHash(n int, first, mid, last byte) uint32 {
	h := uint32(n) | uint32(first)<<8 | uint32(mid)<<16 | uint32(last)<<24
	return h * 0x9E3779B1
}

// buildSlots fills the slot table from children, at most half full, and
// doubles it while some name needs more than a few probes.
func (t *Type) buildSlots() {
	if len(t.children) == 0 {
		return
	}
	// In name order, so that the table is the same on every start.
	names := slices.Sorted(maps.Keys(t.children))
	bits := uint8(1)
	for 1<<bits < 2*len(t.children) {
		bits++
	}
	for ; ; bits++ {
		slots := make([]Child, 1<<bits)
		mask := uint32(len(slots) - 1)
		worst := 0
		for _, name := range names {
			c := t.children[name]
			n := len(name)
			i := childHash(n, name[0], name[n/2], name[n-1]) >> (32 - bits)
			probes := 1
			for slots[i].Name != "" {
				i = (i + 1) & mask
				probes++
			}
			slots[i] = c
			worst = max(worst, probes)
		}
		if worst <= 4 || bits >= 12 {
			t.slots, t.shift = slots, 32-bits
			return
		}
	}
}

// Schema is the compiled STU3 element table.
type Schema struct {
	types     map[string]*Type
	resources []string
}

var (
	schemaOnce sync.Once
	schemaVal  *Schema
	schemaErr  error
	// containerType is the single type behind the type code "Resource".
	containerType = &Type{Name: "Resource", Kind: KindContainer}
)

// STU3 returns the compiled STU3 schema. It panics if the embedded table is
// corrupt, which a test guards against.
func STU3() *Schema {
	schemaOnce.Do(func() { schemaVal, schemaErr = parseSchema(stu3Schema) })
	if schemaErr != nil {
		panic(schemaErr)
	}
	return schemaVal
}

// LookupType returns a resource type, datatype or backbone element by name
// ("Patient", "Quantity", "SimpleQuantity", "Bundle.entry").
func LookupType(name string) *Type { return STU3().types[name] }

// IsResourceType reports whether name is a concrete (non-abstract) STU3
// resource type.
func IsResourceType(name string) bool {
	t := STU3().types[name]
	return t != nil && t.Kind == KindResource && !t.Abstract
}

// LookupElement follows a dotted path of wire names from a type:
// LookupElement("Patient", "name.given") or ("Observation",
// "valueQuantity.value"). It stops at a resource container: the path
// "entry.resource" of Bundle resolves, but what is inside depends on the
// resource found there (look it up from that resource's type).
func LookupElement(typeName, path string) (Child, bool) {
	t := LookupType(typeName)
	var c Child
	for path != "" {
		if t == nil {
			return Child{}, false
		}
		name := path
		if i := strings.IndexByte(path, '.'); i >= 0 {
			name, path = path[:i], path[i+1:]
		} else {
			path = ""
		}
		var ok bool
		if c, ok = t.Child(name); !ok {
			return Child{}, false
		}
		t = c.Type
	}
	return c, c.Element != nil
}

// ResourceTypes returns the names of the concrete resource types.
func (s *Schema) ResourceTypes() []string { return append([]string(nil), s.resources...) }

func parseSchema(src string) (*Schema, error) {
	s := &Schema{types: map[string]*Type{}}
	var cur *Type
	aliases := map[string]string{}
	var pending []*Element
	lineNo := 0
	for len(src) > 0 {
		lineNo++
		line := src
		if i := strings.IndexByte(src, '\n'); i >= 0 {
			line, src = src[:i], src[i+1:]
		} else {
			src = ""
		}
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		bad := func() error { return fmt.Errorf("fhir: schema line %d malformed: %q", lineNo, line) }
		switch f[0] {
		case "P":
			if len(f) != 3 {
				return nil, bad()
			}
			t := &Type{Name: f[1], Kind: KindPrimitive}
			switch f[2] {
			case "number":
				t.JSON = JSONNumber
			case "boolean":
				t.JSON = JSONBoolean
			}
			s.types[t.Name] = t
			cur = nil
		case "S":
			if len(f) != 3 {
				return nil, bad()
			}
			aliases[f[1]] = f[2]
			cur = nil
		case "C", "R", "A", "B":
			if len(f) != 2 {
				return nil, bad()
			}
			cur = &Type{Name: f[1]}
			switch f[0] {
			case "C":
				cur.Kind = KindComplex
			case "B":
				cur.Kind = KindBackbone
			default:
				cur.Kind = KindResource
				cur.Abstract = f[0] == "A"
				if !cur.Abstract {
					s.resources = append(s.resources, cur.Name)
				}
			}
			s.types[cur.Name] = cur
		case "E":
			if len(f) != 6 || cur == nil {
				return nil, bad()
			}
			e := &Element{Name: f[1], Order: len(cur.Elements), Types: strings.Split(f[5], ",")}
			var err error
			if e.Min, err = strconv.Atoi(f[2]); err != nil {
				return nil, bad()
			}
			if f[3] == "*" {
				e.Max = -1
			} else if e.Max, err = strconv.Atoi(f[3]); err != nil {
				return nil, bad()
			}
			e.Choice = strings.Contains(f[4], "c")
			e.Attr = strings.Contains(f[4], "a")
			cur.Elements = append(cur.Elements, e)
			pending = append(pending, e)
		default:
			return nil, bad()
		}
	}
	for alias, base := range aliases {
		bt := s.types[base]
		if bt == nil {
			return nil, fmt.Errorf("fhir: schema: %s constrains unknown type %s", alias, base)
		}
		s.types[alias] = bt
	}
	// Primitive types carry the id attribute and extensions of Element;
	// their value is an attribute in XML and the JSON value itself, held in
	// Node.Value rather than as a child.
	ext := s.types["Extension"]
	str := s.types["string"]
	if ext == nil || str == nil {
		return nil, fmt.Errorf("fhir: schema lacks Extension or string")
	}
	for _, t := range s.types {
		if t.Kind == KindPrimitive && t.Name != "xhtml" && t.Elements == nil {
			t.Elements = []*Element{
				{Name: "id", Order: 0, Max: 1, Attr: true, Types: []string{"string"}, types: []*Type{str}},
				{Name: "extension", Order: 1, Max: -1, Types: []string{"Extension"}, types: []*Type{ext}},
			}
		}
	}
	for _, e := range pending {
		e.types = make([]*Type, len(e.Types))
		for i, code := range e.Types {
			if code == "Resource" {
				e.types[i] = containerType
				continue
			}
			t := s.types[code]
			if t == nil {
				return nil, fmt.Errorf("fhir: schema: element %s has unknown type %s", e.Name, code)
			}
			e.types[i] = t
		}
	}
	for _, t := range s.types {
		if t.children != nil || t.Kind == KindContainer {
			continue
		}
		t.children = make(map[string]Child, len(t.Elements))
		for _, e := range t.Elements {
			if !e.Choice {
				t.children[e.Name] = Child{Name: e.Name, Element: e, Type: e.types[0], TypeCode: e.Types[0]}
				continue
			}
			for i, code := range e.Types {
				name := e.Name + strings.ToUpper(code[:1]) + code[1:]
				t.children[name] = Child{Name: name, Element: e, Type: e.types[i], TypeCode: code}
			}
		}
		t.buildSlots()
	}
	return s, nil
}
