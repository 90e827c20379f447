package fhir

import (
	"fmt"
	"slices"
	"unicode/utf8"
)

// MarshalJSON writes a resource tree as compact FHIR JSON. Whether an
// element is an array comes from the STU3 definitions, never from how many
// repetitions are present; decimals keep their digits because values are
// written as received.
func MarshalJSON(n *Node) ([]byte, error) { return marshalJSON(n, false) }

// MarshalJSONIndent writes a resource tree as indented FHIR JSON.
func MarshalJSONIndent(n *Node) ([]byte, error) { return marshalJSON(n, true) }

type jsonWriter struct {
	buf    []byte
	pretty bool
	stack  []frame
}

func marshalJSON(n *Node, pretty bool) ([]byte, error) {
	t, err := rootType(n)
	if err != nil {
		return nil, err
	}
	w := &jsonWriter{buf: make([]byte, 0, 4096), pretty: pretty, stack: make([]frame, 0, 16)}
	if err := w.object(n, t, nil, 0); err != nil {
		return nil, err
	}
	if pretty {
		w.buf = append(w.buf, '\n')
	}
	return w.buf, nil
}

func (w *jsonWriter) errorf(format string, args ...any) error {
	return fmt.Errorf("fhir: marshal %s: %s", stackPath(w.stack), fmt.Sprintf(format, args...))
}

func (w *jsonWriter) newline(depth int) {
	if !w.pretty {
		return
	}
	w.buf = append(w.buf, '\n')
	for range depth {
		w.buf = append(w.buf, ' ', ' ')
	}
}

func (w *jsonWriter) key(first *bool, name string, depth int) {
	w.keyPrefixed(first, "", name, depth)
}

// keyPrefixed writes a property name made of prefix and name ("_" for a
// primitive's extensions) without concatenating them.
func (w *jsonWriter) keyPrefixed(first *bool, prefix, name string, depth int) {
	if !*first {
		w.buf = append(w.buf, ',')
	}
	*first = false
	w.newline(depth)
	w.buf = append(w.buf, '"')
	w.buf = append(w.buf, prefix...)
	w.buf = append(w.buf, name...)
	w.buf = append(w.buf, '"', ':')
	if w.pretty {
		w.buf = append(w.buf, ' ')
	}
}

// object writes n's children (not its primitive value) as a JSON object of
// type t; a resource also gets its resourceType.
func (w *jsonWriter) object(n *Node, t *Type, el *Element, depth int) error {
	w.stack = append(w.stack, frame{node: n, el: el, index: -1})
	defer func() { w.stack = w.stack[:len(w.stack)-1] }()
	w.buf = append(w.buf, '{')
	first := true
	if n.ResourceType != "" {
		w.key(&first, "resourceType", depth+1)
		w.str(n.ResourceType)
	}
	// FHIR JSON has one property per element, so every repetition is
	// gathered. In any valid tree they are contiguous and each run is one
	// property, written from a subslice; otherwise (an out-of-order XML
	// tree) each name is gathered once, at its first run.
	contiguous := runsContiguous(n.Children)
	var written []string
	for i, j := 0, 0; i < len(n.Children); i = j {
		k := n.Children[i]
		j = i + 1
		for j < len(n.Children) && n.Children[j].Name == k.Name {
			j++
		}
		group := n.Children[i:j]
		if !contiguous {
			if slices.Contains(written, k.Name) {
				continue
			}
			written = append(written, k.Name)
			group = nil
			for _, g := range n.Children[i:] {
				if g.Name == k.Name {
					group = append(group, g)
				}
			}
		}
		c, ok := t.Child(k.Name)
		if !ok {
			return w.errorf("unknown element %q in %s", k.Name, t.Name)
		}
		if len(group) > 1 && !c.Element.Repeats() {
			return w.errorf("%s occurs %d times but is not a repeating element", k.Name, len(group))
		}
		if err := w.property(&first, c, group, depth+1); err != nil {
			return err
		}
	}
	w.newlineIf(!first, depth)
	w.buf = append(w.buf, '}')
	return nil
}

func (w *jsonWriter) newlineIf(cond bool, depth int) {
	if cond {
		w.newline(depth)
	}
}

// runsContiguous reports whether every name forms a single run. The names
// seen are few (bounded by the schema), so this is linear in practice.
func runsContiguous(kids []*Node) bool {
	var buf [32]string
	names := buf[:0]
	for i := 0; i < len(kids); i++ {
		if i > 0 && kids[i].Name == kids[i-1].Name {
			continue
		}
		if slices.Contains(names, kids[i].Name) {
			return false
		}
		names = append(names, kids[i].Name)
	}
	return true
}

func (w *jsonWriter) property(first *bool, c Child, group []*Node, depth int) error {
	el, t := c.Element, c.Type
	rep := el.Repeats()
	switch {
	case el.Attr:
		k := group[0]
		if len(k.Children) > 0 {
			return w.errorf("%s cannot carry extensions", k.Name)
		}
		w.key(first, c.Name, depth)
		w.str(k.Value)
		return nil
	case t.Name == "xhtml":
		w.key(first, c.Name, depth)
		w.str(group[0].XHTML)
		return nil
	case t.Kind == KindPrimitive:
		return w.primitive(first, c, group, depth)
	}
	w.key(first, c.Name, depth)
	if rep {
		w.buf = append(w.buf, '[')
	}
	for i, k := range group {
		if i > 0 {
			w.buf = append(w.buf, ',')
		}
		if rep {
			w.newline(depth + 1)
		}
		d := depth
		if rep {
			d++
		}
		if t.Kind == KindContainer {
			if len(k.Children) != 1 || k.Children[0].ResourceType == "" {
				return w.errorf("%s must hold exactly one resource", k.Name)
			}
			r := k.Children[0]
			rt := LookupType(r.ResourceType)
			if rt == nil || rt.Kind != KindResource || rt.Abstract {
				return w.errorf("%q is not an STU3 resource type", r.ResourceType)
			}
			w.stack = append(w.stack, frame{node: k, el: el, index: -1})
			err := w.object(r, rt, nil, d)
			w.stack = w.stack[:len(w.stack)-1]
			if err != nil {
				return err
			}
			continue
		}
		if err := w.object(k, t, el, d); err != nil {
			return err
		}
	}
	if rep {
		w.newline(depth)
		w.buf = append(w.buf, ']')
	}
	return nil
}

// primitive writes "name": value(s) and, when any repetition has an id or
// extensions, "_name": object(s), with nulls keeping the arrays aligned.
func (w *jsonWriter) primitive(first *bool, c Child, group []*Node, depth int) error {
	rep := c.Element.Repeats()
	anyValue, anyExt := false, false
	for _, k := range group {
		anyValue = anyValue || k.HasValue
		anyExt = anyExt || len(k.Children) > 0
		if !k.HasValue && len(k.Children) == 0 {
			return w.errorf("%s has neither a value nor extensions", k.Name)
		}
		if k.HasValue {
			if msg := checkPrimitive(c.Type, k.Value); msg != "" {
				return w.errorf("%s", msg)
			}
		}
	}
	if anyValue {
		w.key(first, c.Name, depth)
		if rep {
			w.buf = append(w.buf, '[')
		}
		for i, k := range group {
			if i > 0 {
				w.buf = append(w.buf, ',')
			}
			switch {
			case !k.HasValue:
				w.buf = append(w.buf, "null"...)
			case c.Type.JSON == JSONString:
				w.str(k.Value)
			default:
				w.buf = append(w.buf, k.Value...)
			}
		}
		if rep {
			w.buf = append(w.buf, ']')
		}
	}
	if !anyExt {
		return nil
	}
	w.keyPrefixed(first, "_", c.Name, depth)
	if rep {
		w.buf = append(w.buf, '[')
	}
	for i, k := range group {
		if i > 0 {
			w.buf = append(w.buf, ',')
		}
		if len(k.Children) == 0 {
			w.buf = append(w.buf, "null"...)
			continue
		}
		d := depth
		if rep {
			w.newline(depth + 1)
			d++
		}
		if err := w.object(k, c.Type, c.Element, d); err != nil {
			return err
		}
	}
	if rep {
		w.buf = append(w.buf, ']')
	}
	return nil
}

// str writes a JSON string. U+2028 and U+2029 are escaped too so the output
// is also safe to embed in JavaScript.
func (w *jsonWriter) str(s string) {
	w.buf = appendJSONString(w.buf, s)
}

const hexDigits = "0123456789abcdef"

func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	last := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == '\u2028' || r == '\u2029' || (r == utf8.RuneError && size == 1) {
				b = append(b, s[last:i]...)
				if r == utf8.RuneError {
					b = append(b, `\ufffd`...)
				} else {
					b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
				}
				i += size
				last = i
				continue
			}
			i += size
			continue
		}
		b = append(b, s[last:i]...)
		switch c {
		case '"':
			b = append(b, '\\', '"')
		case '\\':
			b = append(b, '\\', '\\')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
		i++
		last = i
	}
	b = append(b, s[last:]...)
	return append(b, '"')
}
