package fhir

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Namespaces of FHIR XML and of the narrative XHTML.
const (
	NamespaceFHIR  = "http://hl7.org/fhir"
	NamespaceXHTML = "http://www.w3.org/1999/xhtml"
	namespaceXSI   = "http://www.w3.org/2001/XMLSchema-instance"

	maxNamespaceBindings = 64
)

// frame is one open element during decoding; the stack of frames is also
// what an error location is built from.
type frame struct {
	node *Node
	// typ is the type of node's content; containerType for an element that
	// holds a resource.
	typ *Type
	el  *Element
	// raw is the element name as written (prefix and local), to match the
	// end tag, which RawToken does not check.
	rawSpace, rawLocal string
	// nsMark is the length of the namespace binding stack before this
	// element's own declarations.
	nsMark int
	// runName and runLen count the current run of equal child names.
	runName string
	runLen  int
	// index is the position among same-named siblings when the parent's
	// Children are not built yet (JSON decoding); -1 means look it up.
	index int
	// kids is where this element's children start in xmlParser.kids
	// (XML decoding builds Children when the element closes).
	kids int
}

type nsBinding struct{ prefix, uri string }

type xmlParser struct {
	data   []byte
	lim    Limits
	dec    *xmlScanner
	pos    posTracker
	stack  []frame
	ns     []nsBinding
	slab   nodeSlab
	count  int
	tokOff int
	// kids is a stack of the children of the open elements, each run
	// starting at its frame's kids mark; an element's run is copied into
	// ptrs, as one exact-size slice, when it closes.
	kids []*Node
	ptrs ptrSlab
}

// ParseXML decodes a FHIR XML resource into a tree.
//
// The body is untrusted: a DTD, any entity other than the five predefined
// ones, a processing instruction other than the XML declaration, a non
// UTF-8 encoding, invalid UTF-8, NUL, text outside the narrative, an
// element unknown to STU3 or one breaking lim is a *DecodeError. Children
// keep document order (attributes first), so CheckElementOrder can report
// what a publisher wrote out of order.
func ParseXML(data []byte, lim Limits) (*Node, error) {
	data = bytes.TrimPrefix(data, utf8BOM)
	if e := checkBytes(data); e != nil {
		return nil, e
	}
	p := &xmlParser{data: data, lim: lim.withDefaults()}
	p.pos.data = data
	// One node slab sized from the body: each element starts with '<' and
	// most FHIR elements are empty (<x value=".."/>), so the start tags
	// ('<' less "</") are close to the node count; more nodes (id and url
	// attributes) take further chunks.
	est := slabSize(bytes.Count(data, []byte{'<'})-bytes.Count(data, []byte("</"))+1, p.lim)
	p.slab.buf = make([]Node, 0, est)
	p.ptrs.buf = make([]*Node, 0, est)
	p.stack = make([]frame, 0, 16)
	p.kids = make([]*Node, 0, 64)
	p.dec = newXMLScanner(data)
	root, err := p.run()
	if err != nil {
		return nil, err
	}
	return root, nil
}

func (p *xmlParser) fail(format string, args ...any) *DecodeError {
	// The location needs the children of the open elements (a repeating
	// element's index): give each its run so far.
	for i := range p.stack {
		end := len(p.kids)
		if i+1 < len(p.stack) {
			end = p.stack[i+1].kids
		}
		p.stack[i].node.Children = p.kids[p.stack[i].kids:end]
	}
	e := &DecodeError{Msg: fmt.Sprintf(format, args...)}
	e.Line, e.Col = p.pos.at(p.tokOff)
	e.Path = stackPath(p.stack)
	return e
}

// stackPath renders the location of the innermost open element.
func stackPath(stack []frame) string {
	var b strings.Builder
	for i, f := range stack {
		if i == 0 {
			b.WriteString(f.node.Name)
			continue
		}
		if f.el == nil { // a resource inside its container adds no step
			continue
		}
		b.WriteByte('.')
		b.WriteString(f.node.Name)
		if f.el.Repeats() {
			idx := f.index
			if idx < 0 {
				idx = stack[i-1].node.IndexOf(f.node)
			}
			fmt.Fprintf(&b, "[%d]", idx)
		}
	}
	return b.String()
}

func (p *xmlParser) run() (*Node, error) {
	var root *Node
	first := true
	for {
		p.tokOff = int(p.dec.InputOffset())
		kind, err := p.dec.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, p.syntaxError(err)
		}
		switch kind {
		case tokStart:
			t := xml.StartElement{Name: p.dec.name, Attr: p.dec.attr}
			if root != nil && len(p.stack) == 0 {
				return nil, p.fail("content after the root element")
			}
			n, err := p.start(t)
			if err != nil {
				return nil, err
			}
			if root == nil {
				root = n
			}
		case tokEnd:
			t := xml.EndElement{Name: p.dec.name}
			if len(p.stack) == 0 {
				return nil, p.fail("unexpected end tag </%s>", qname(t.Name))
			}
			top := p.stack[len(p.stack)-1]
			if t.Name.Space != top.rawSpace || t.Name.Local != top.rawLocal {
				return nil, p.fail("end tag </%s> does not match <%s>", qname(t.Name), qname(xml.Name{Space: top.rawSpace, Local: top.rawLocal}))
			}
			top.node.Children = p.ptrs.copyOf(p.kids[top.kids:])
			if err := p.end(top); err != nil {
				return nil, err
			}
			p.kids = p.kids[:top.kids]
			p.ns = p.ns[:top.nsMark]
			p.stack = p.stack[:len(p.stack)-1]
		case tokText:
			if !xmlSpace(p.dec.text) {
				if len(p.stack) == 0 {
					return nil, p.fail("text outside the root element")
				}
				return nil, p.fail("text content is not allowed in FHIR element <%s> (values go in the value attribute)", p.stack[len(p.stack)-1].node.Name)
			}
		case tokComment:
			// Comments carry no FHIR content.
		case tokProcInst:
			if p.dec.target != "xml" || !first {
				return nil, p.fail("processing instruction <?%s?> is not allowed", p.dec.target)
			}
			if enc := procInstParam(string(p.dec.text), "encoding"); enc != "" && !strings.EqualFold(enc, "utf-8") && !strings.EqualFold(enc, "utf8") {
				return nil, p.fail("encoding %q is not supported: FHIR bodies must be UTF-8", enc)
			}
		case tokDirective:
			return nil, p.fail("DTDs and other <!...> declarations are not allowed")
		}
		first = false
	}
	if len(p.stack) > 0 {
		p.tokOff = len(p.data)
		return nil, p.fail("unexpected end of document: <%s> is not closed", p.stack[len(p.stack)-1].node.Name)
	}
	if root == nil {
		return nil, &DecodeError{Msg: "no root element"}
	}
	return root, nil
}

// xmlSpace reports whether text is only XML white space (what FHIR allows
// between elements).
func xmlSpace(text []byte) bool {
	for _, c := range text {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

func (p *xmlParser) syntaxError(err error) *DecodeError {
	msg := err.Error()
	var se *xml.SyntaxError
	if errors.As(err, &se) {
		msg = "XML syntax error: " + se.Msg
		if strings.HasPrefix(se.Msg, "invalid character entity") {
			msg = "XML syntax error: " + se.Msg + " (only the five predefined entities and character references are allowed)"
		}
	}
	e := p.fail("%s", msg)
	e.Line, e.Col = p.pos.at(int(p.dec.InputOffset()))
	return e
}

func qname(n xml.Name) string {
	if n.Space == "" {
		return n.Local
	}
	return n.Space + ":" + n.Local
}

// procInstParam extracts a pseudo-attribute from an XML declaration.
func procInstParam(s, name string) string {
	i := strings.Index(s, name)
	if i < 0 {
		return ""
	}
	s = strings.TrimLeft(s[i+len(name):], " \t\r\n")
	if !strings.HasPrefix(s, "=") {
		return ""
	}
	s = strings.TrimLeft(s[1:], " \t\r\n")
	if s == "" || (s[0] != '"' && s[0] != '\'') {
		return ""
	}
	q := s[0]
	s = s[1:]
	if j := strings.IndexByte(s, q); j >= 0 {
		return s[:j]
	}
	return ""
}

func (p *xmlParser) resolve(prefix string) (string, bool) {
	for i := len(p.ns) - 1; i >= 0; i-- {
		if p.ns[i].prefix == prefix {
			return p.ns[i].uri, true
		}
	}
	return "", prefix == ""
}

func (p *xmlParser) start(t xml.StartElement) (*Node, error) {
	p.count++
	if p.count > p.lim.MaxElements {
		return nil, p.fail("more than %d elements", p.lim.MaxElements)
	}
	if len(p.stack) >= p.lim.MaxDepth {
		return nil, p.fail("elements nested deeper than %d", p.lim.MaxDepth)
	}
	mark := len(p.ns)
	for _, a := range t.Attr {
		switch {
		case a.Name.Space == "" && a.Name.Local == "xmlns":
			p.ns = append(p.ns, nsBinding{"", a.Value})
		case a.Name.Space == "xmlns":
			p.ns = append(p.ns, nsBinding{a.Name.Local, a.Value})
		}
	}
	if len(p.ns) > maxNamespaceBindings {
		// Every element resolves its prefix by scanning the bindings in
		// scope; unbounded declarations would make that quadratic.
		return nil, p.fail("more than %d namespace declarations in scope", maxNamespaceBindings)
	}
	uri, ok := p.resolve(t.Name.Space)
	if !ok {
		return nil, p.fail("undeclared namespace prefix %q", t.Name.Space)
	}
	local := t.Name.Local

	n := p.slab.new()
	n.Line, n.Col = p.pos.at(p.tokOff)
	f := frame{node: n, rawSpace: t.Name.Space, rawLocal: local, nsMark: mark, index: -1}

	if len(p.stack) == 0 {
		if uri != NamespaceFHIR {
			return nil, p.fail("root element <%s> is not in the FHIR namespace %s", local, NamespaceFHIR)
		}
		rt := LookupType(local)
		if rt == nil || rt.Kind != KindResource || rt.Abstract {
			return nil, p.fail("root element <%s> is not a FHIR STU3 resource type", local)
		}
		n.Name, n.ResourceType = rt.Name, rt.Name
		f.typ = rt
	} else {
		parent := &p.stack[len(p.stack)-1]
		c, known := parent.typ.Child(local)
		isDiv := known && c.Type.Name == "xhtml"
		switch {
		case isDiv && uri != NamespaceXHTML:
			return nil, p.fail("<%s> must be in the XHTML namespace %s", local, NamespaceXHTML)
		case !isDiv && uri != NamespaceFHIR:
			return nil, p.fail("element <%s> is not in the FHIR namespace %s", local, NamespaceFHIR)
		}
		if parent.typ.Kind == KindContainer {
			rt := LookupType(local)
			if rt == nil || rt.Kind != KindResource || rt.Abstract {
				return nil, p.fail("<%s> is not a FHIR STU3 resource type", local)
			}
			if len(p.kids) > parent.kids {
				return nil, p.fail("<%s> holds more than one resource", parent.node.Name)
			}
			n.Name, n.ResourceType = rt.Name, rt.Name
			f.typ = rt
		} else {
			if !known {
				e := p.fail("unknown element <%s> in %s", local, parent.typ.Name)
				e.Path += "." + local
				return nil, e
			}
			if c.Element.Attr {
				return nil, p.fail("%s must be an XML attribute, not an element", local)
			}
			if err := p.checkRepeat(parent, c); err != nil {
				return nil, err
			}
			n.Name = c.Name
			f.typ, f.el = c.Type, c.Element
			if c.Type.Name == "xhtml" {
				p.kids = append(p.kids, n)
				f.kids = len(p.kids)
				p.stack = append(p.stack, f)
				if err := p.xhtml(t, n); err != nil {
					return nil, err
				}
				p.ns = p.ns[:mark]
				p.stack = p.stack[:len(p.stack)-1]
				return n, nil
			}
		}
		p.kids = append(p.kids, n)
	}
	f.kids = len(p.kids)
	p.stack = append(p.stack, f)
	return n, p.attrs(t, &f)
}

// checkRepeat enforces cardinality 0..1 (a second <birthDate> is malformed
// in any serialisation) and MaxArrayLen for repeating elements, counting the
// current run of equal names in the frame so that long runs stay linear.
func (p *xmlParser) checkRepeat(parent *frame, c Child) error {
	if c.Element.Repeats() {
		if parent.runName == c.Name {
			parent.runLen++
		} else {
			parent.runName, parent.runLen = c.Name, 1
		}
		if parent.runLen > p.lim.MaxArrayLen {
			return p.fail("more than %d repetitions of %s", p.lim.MaxArrayLen, c.Name)
		}
		return nil
	}
	parent.runName, parent.runLen = c.Name, 1
	for _, k := range p.kids[parent.kids:] {
		if k.Name == c.Name || (c.Element.Choice && sameElement(parent.typ, k.Name, c.Element)) {
			return p.fail("%s occurs more than once but is not a repeating element", c.Name)
		}
	}
	return nil
}

func sameElement(t *Type, name string, el *Element) bool {
	c, ok := t.Child(name)
	return ok && c.Element == el
}

func (p *xmlParser) attrs(t xml.StartElement, f *frame) error {
	n := f.node
	for _, a := range t.Attr {
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		if a.Name.Space != "" {
			// xsi:schemaLocation is a hint to schema-aware editors that
			// several NHS examples carry; it is not FHIR content.
			if uri, _ := p.resolve(a.Name.Space); uri == namespaceXSI && a.Name.Local == "schemaLocation" {
				continue
			}
			return p.fail("attribute %s is not allowed on <%s>", qname(a.Name), n.Name)
		}
		if len(a.Value) > p.lim.MaxStringLen {
			return p.fail("attribute %s is longer than %d bytes", a.Name.Local, p.lim.MaxStringLen)
		}
		if a.Name.Local == "value" && f.typ.Kind == KindPrimitive {
			if n.HasValue {
				return p.fail("duplicate value attribute")
			}
			if msg := checkPrimitive(f.typ, a.Value); msg != "" {
				return p.fail("%s", msg)
			}
			n.Value, n.HasValue = a.Value, true
			continue
		}
		c, ok := f.typ.Child(a.Name.Local)
		if !ok || !c.Element.Attr {
			return p.fail("attribute %s is not allowed on <%s>", a.Name.Local, n.Name)
		}
		for _, k := range p.kids[f.kids:] {
			if k.Name == c.Name {
				return p.fail("duplicate attribute %s", c.Name)
			}
		}
		k := p.slab.new()
		k.Name, k.Value, k.HasValue, k.Line, k.Col = c.Name, a.Value, true, n.Line, n.Col
		p.kids = append(p.kids, k)
	}
	if kids := p.kids[f.kids:]; len(kids) == 2 && kids[0].Name == "url" { // keep id before url, as JSON sorting does
		kids[0], kids[1] = kids[1], kids[0]
	}
	return nil
}

// end checks what can only be known when an element closes.
func (p *xmlParser) end(f frame) error {
	n := f.node
	switch f.typ.Kind {
	case KindPrimitive:
		if !n.HasValue && len(n.Children) == 0 {
			return p.fail("<%s> has neither a value attribute nor extensions", n.Name)
		}
	case KindContainer:
		if len(n.Children) == 0 {
			return p.fail("<%s> holds no resource", n.Name)
		}
	}
	return nil
}

// xhtml captures a narrative div as raw text. The decoder still walks it,
// so the same syntax, entity, depth and size rules apply inside.
func (p *xmlParser) xhtml(t xml.StartElement, n *Node) error {
	declared := false
	for _, a := range t.Attr {
		if (a.Name.Space == "" && a.Name.Local == "xmlns" && t.Name.Space == "") ||
			(a.Name.Space == "xmlns" && a.Name.Local == t.Name.Space && t.Name.Space != "") {
			declared = a.Value == NamespaceXHTML
		}
	}
	if !declared {
		return p.fail("<div> must declare the XHTML namespace %s on itself", NamespaceXHTML)
	}
	start := p.tokOff
	depth := 1
	open := []xml.Name{t.Name}
	for depth > 0 {
		p.tokOff = int(p.dec.InputOffset())
		kind, err := p.dec.next()
		if err == io.EOF {
			return p.fail("unexpected end of document inside <div>")
		}
		if err != nil {
			return p.syntaxError(err)
		}
		switch kind {
		case tokStart:
			open = append(open, p.dec.name)
			depth++
			p.count++
			if p.count > p.lim.MaxElements {
				return p.fail("more than %d elements", p.lim.MaxElements)
			}
			if len(p.stack)+depth > p.lim.MaxDepth {
				return p.fail("elements nested deeper than %d", p.lim.MaxDepth)
			}
		case tokEnd:
			if open[depth-1] != p.dec.name {
				return p.fail("end tag </%s> does not match <%s>", qname(p.dec.name), qname(open[depth-1]))
			}
			open = open[:depth-1]
			depth--
		case tokProcInst:
			return p.fail("processing instructions are not allowed")
		case tokDirective:
			return p.fail("DTDs and other <!...> declarations are not allowed")
		}
	}
	end := int(p.dec.InputOffset())
	if end-start > p.lim.MaxStringLen {
		return p.fail("narrative div is longer than %d bytes", p.lim.MaxStringLen)
	}
	n.XHTML = p.dec.str[start:end] // a substring of the body: no copy
	return nil
}

// checkPrimitive checks the lexical form of values whose JSON form is not a
// string: they are written unquoted in JSON, so a bad one would corrupt the
// output instead of merely failing validation.
func checkPrimitive(t *Type, v string) string {
	switch t.JSON {
	case JSONBoolean:
		if v != "true" && v != "false" {
			return fmt.Sprintf("%q is not a valid boolean", v)
		}
	case JSONNumber:
		integer := t.Name != "decimal"
		if !validNumber(v, integer) {
			return fmt.Sprintf("%q is not a valid %s", v, t.Name)
		}
	}
	return ""
}

// validNumber checks JSON number grammar (which FHIR decimal follows);
// integers admit no fraction or exponent.
func validNumber(s string, integer bool) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if integer {
		return i == len(s)
	}
	if i < len(s) && s[i] == '.' {
		i++
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == j {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == j {
			return false
		}
	}
	return i == len(s)
}
