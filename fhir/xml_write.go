package fhir

import "fmt"

// MarshalXML writes a resource tree as compact FHIR XML, children in tree
// order. Element names are checked against the STU3 schema, so a tree built
// in code cannot produce XML the parsers would refuse.
func MarshalXML(n *Node) ([]byte, error) { return marshalXML(n, false) }

// MarshalXMLIndent writes a resource tree as indented FHIR XML.
func MarshalXMLIndent(n *Node) ([]byte, error) { return marshalXML(n, true) }

type xmlWriter struct {
	buf    []byte
	pretty bool
	// stack locates errors without building a path per element.
	stack []frame
}

func (w *xmlWriter) errorf(format string, args ...any) error {
	return fmt.Errorf("fhir: marshal %s: %s", stackPath(w.stack), fmt.Sprintf(format, args...))
}

func marshalXML(n *Node, pretty bool) ([]byte, error) {
	t, err := rootType(n)
	if err != nil {
		return nil, err
	}
	w := &xmlWriter{buf: make([]byte, 0, 4096), pretty: pretty, stack: make([]frame, 0, 16)}
	w.buf = append(w.buf, `<?xml version="1.0" encoding="UTF-8"?>`...)
	if err := w.element(n.ResourceType, n, t, nil, 0, true); err != nil {
		return nil, err
	}
	if pretty {
		w.buf = append(w.buf, '\n')
	}
	return w.buf, nil
}

func rootType(n *Node) (*Type, error) {
	if n == nil || n.ResourceType == "" {
		return nil, fmt.Errorf("fhir: marshal: root node is not a resource")
	}
	t := LookupType(n.ResourceType)
	if t == nil || t.Kind != KindResource || t.Abstract {
		return nil, fmt.Errorf("fhir: marshal: %q is not an STU3 resource type", n.ResourceType)
	}
	return t, nil
}

func (w *xmlWriter) indent(depth int) {
	if !w.pretty {
		return
	}
	w.buf = append(w.buf, '\n')
	for range depth {
		w.buf = append(w.buf, ' ', ' ')
	}
}

func (w *xmlWriter) element(name string, n *Node, t *Type, el *Element, depth int, root bool) error {
	w.stack = append(w.stack, frame{node: n, el: el, index: -1})
	defer func() { w.stack = w.stack[:len(w.stack)-1] }()
	w.indent(depth)
	if t.Name == "xhtml" {
		if n.XHTML == "" {
			return w.errorf("empty narrative div")
		}
		w.buf = append(w.buf, n.XHTML...)
		return nil
	}
	w.buf = append(w.buf, '<')
	w.buf = append(w.buf, name...)
	if root {
		w.buf = append(w.buf, ` xmlns="`+NamespaceFHIR+`"`...)
	}
	if t.Kind == KindContainer {
		if len(n.Children) != 1 || n.Children[0].ResourceType == "" {
			return w.errorf("a resource container must hold exactly one resource")
		}
		r := n.Children[0]
		rt := LookupType(r.ResourceType)
		if rt == nil || rt.Kind != KindResource || rt.Abstract {
			return w.errorf("%q is not an STU3 resource type", r.ResourceType)
		}
		w.buf = append(w.buf, '>')
		if err := w.element(r.ResourceType, r, rt, nil, depth+1, false); err != nil {
			return err
		}
		w.indent(depth)
		return w.close(name)
	}
	elems := 0
	for _, k := range n.Children {
		c, ok := t.Child(k.Name)
		if !ok {
			return w.errorf("unknown element %q in %s", k.Name, t.Name)
		}
		if c.Element.Attr {
			if len(k.Children) > 0 {
				return w.errorf("%s is an XML attribute and cannot carry extensions", k.Name)
			}
			w.attr(k.Name, k.Value)
		} else {
			elems++
		}
	}
	if t.Kind == KindPrimitive && n.HasValue {
		if msg := checkPrimitive(t, n.Value); msg != "" {
			return w.errorf("%s", msg)
		}
		w.attr("value", n.Value)
	}
	if elems == 0 {
		w.buf = append(w.buf, "/>"...)
		return nil
	}
	w.buf = append(w.buf, '>')
	for _, k := range n.Children {
		c, _ := t.Child(k.Name)
		if c.Element.Attr {
			continue
		}
		if err := w.element(k.Name, k, c.Type, c.Element, depth+1, false); err != nil {
			return err
		}
	}
	w.indent(depth)
	return w.close(name)
}

func (w *xmlWriter) close(name string) error {
	w.buf = append(w.buf, "</"...)
	w.buf = append(w.buf, name...)
	w.buf = append(w.buf, '>')
	return nil
}

func (w *xmlWriter) attr(name, v string) {
	w.buf = append(w.buf, ' ')
	w.buf = append(w.buf, name...)
	w.buf = append(w.buf, '=', '"')
	w.buf = appendXMLEscaped(w.buf, v)
	w.buf = append(w.buf, '"')
}

// appendXMLEscaped escapes an attribute value so that it reads back
// unchanged: markup characters and the whitespace that attribute-value
// normalisation would otherwise fold into spaces.
func appendXMLEscaped(b []byte, s string) []byte {
	last := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch s[i] {
		case '&':
			esc = "&amp;"
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '"':
			esc = "&quot;"
		case '\n':
			esc = "&#xA;"
		case '\r':
			esc = "&#xD;"
		case '\t':
			esc = "&#x9;"
		default:
			continue
		}
		b = append(b, s[last:i]...)
		b = append(b, esc...)
		last = i + 1
	}
	return append(b, s[last:]...)
}
