package fhir

import (
	"bytes"
	"cmp"
	"encoding/xml"
	"fmt"
	"io"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// ParseJSON decodes a FHIR JSON resource into a tree.
//
// It is a schema-driven tokenizer rather than encoding/json: numbers keep
// their literal text (a decimal's digits are data), duplicate keys are
// rejected, "_name" primitive extensions are merged with their values
// (including arrays with nulls), and children are put into STU3 element
// order so the XML writer emits schema-valid XML. A narrative div must be
// well-formed XHTML in the XHTML namespace: it is written verbatim into XML.
func ParseJSON(data []byte, lim Limits) (*Node, error) {
	data = bytes.TrimPrefix(data, utf8BOM)
	if e := checkBytes(data); e != nil {
		return nil, e
	}
	p := &jsonParser{data: data, lim: lim.withDefaults(), src: string(data)}
	p.stack = make([]frame, 0, 16)
	p.kids = make([]*Node, 0, 64)
	p.pos.data = data
	// One slab sized from the body: every element starts with a key or
	// follows a comma, so this bounds the node count from above.
	p.slab.buf = make([]Node, 0, slabSize(bytes.Count(data, []byte{':'})+bytes.Count(data, []byte{','})+1, p.lim))
	p.ws()
	if p.i >= len(p.data) || p.data[p.i] != '{' {
		return nil, p.fail("a FHIR JSON body must be an object with a resourceType")
	}
	root := p.slab.new()
	if err := p.resource(root, nil); err != nil {
		return nil, err
	}
	p.ws()
	if p.i != len(p.data) {
		return nil, p.fail("content after the resource")
	}
	return root, nil
}

type jsonParser struct {
	data  []byte
	i     int
	lim   Limits
	pos   posTracker
	slab  nodeSlab
	stack []frame
	depth int
	count int
	// keyBuf holds an unescaped key.
	keyBuf []byte
	// src is the body as one string: unescaped values are substrings of
	// it, so a parse makes one string allocation instead of one per value.
	src string
	// kids is a stack of children under construction; each finished
	// object's run is copied into ptrs, a slab of exact-size slices.
	kids []*Node
	ptrs ptrSlab
}

func (p *jsonParser) fail(format string, args ...any) *DecodeError {
	e := &DecodeError{Msg: fmt.Sprintf(format, args...)}
	e.Line, e.Col = p.pos.at(p.i)
	e.Path = stackPath(p.stack)
	return e
}

func (p *jsonParser) ws() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\r', '\n':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) peek() byte {
	p.ws()
	if p.i >= len(p.data) {
		return 0
	}
	return p.data[p.i]
}

func (p *jsonParser) expect(c byte) error {
	if p.peek() != c {
		if p.i >= len(p.data) {
			return p.fail("unexpected end of JSON, expected '%c'", c)
		}
		return p.fail("expected '%c', found '%c'", c, p.data[p.i])
	}
	p.i++
	return nil
}

func (p *jsonParser) enter() error {
	p.depth++
	if p.depth > p.lim.MaxDepth {
		return p.fail("JSON nested deeper than %d", p.lim.MaxDepth)
	}
	return nil
}

func (p *jsonParser) newNode() (*Node, error) {
	p.count++
	if p.count > p.lim.MaxElements {
		return nil, p.fail("more than %d elements", p.lim.MaxElements)
	}
	n := p.slab.new()
	n.Line, n.Col = p.pos.at(p.i)
	return n, nil
}

// resource decodes the object at p.i into n, a resource whose type comes
// from its resourceType property (wherever it appears in the object).
// container is the element holding it (nil for the root).
func (p *jsonParser) resource(n *Node, container *Element) error {
	n.Line, n.Col = p.pos.at(p.i)
	rt, err := p.findResourceType()
	if err != nil {
		return err
	}
	t := LookupType(rt)
	if t == nil || t.Kind != KindResource || t.Abstract {
		return p.fail("resourceType %q is not a FHIR STU3 resource type", rt)
	}
	n.Name, n.ResourceType = t.Name, t.Name
	p.stack = append(p.stack, frame{node: n, index: -1})
	err = p.object(n, t)
	p.stack = p.stack[:len(p.stack)-1]
	return err
}

// findResourceType reads resourceType without consuming the object. It is
// nearly always the first key; otherwise the object is scanned once.
func (p *jsonParser) findResourceType() (string, error) {
	save := p.i
	defer func() { p.i = save }()
	if err := p.expect('{'); err != nil {
		return "", err
	}
	if err := p.enter(); err != nil {
		return "", err
	}
	defer func() { p.depth-- }()
	if p.peek() == '}' {
		return "", p.fail("object has no resourceType")
	}
	for {
		key, err := p.key()
		if err != nil {
			return "", err
		}
		if string(key) == "resourceType" {
			if p.peek() != '"' {
				return "", p.fail("resourceType must be a string")
			}
			return p.str()
		}
		if err := p.skip(); err != nil {
			return "", err
		}
		switch p.peek() {
		case ',':
			p.i++
		case '}':
			return "", p.fail("object has no resourceType")
		default:
			return "", p.fail("expected ',' or '}' in object")
		}
	}
}

// key reads an object key and the colon after it.
func (p *jsonParser) key() ([]byte, error) {
	if p.peek() != '"' {
		return nil, p.fail("expected a property name")
	}
	k, err := p.rawStr()
	if err != nil {
		return nil, err
	}
	if err := p.expect(':'); err != nil {
		return nil, err
	}
	return k, nil
}

// slot tracks the nodes created for one element of the object being
// decoded, so "name" and "_name" can be merged in either order.
type slot struct {
	child     Child
	start, n  int
	haveValue bool
	haveExt   bool
}

func (p *jsonParser) object(n *Node, t *Type) error {
	if err := p.expect('{'); err != nil {
		return err
	}
	if err := p.enter(); err != nil {
		return err
	}
	var slotBuf [16]slot
	slots := slotBuf[:0]
	base := len(p.kids)
	sawType := false
	if p.peek() == '}' {
		p.i++
		p.depth--
		return nil
	}
	for {
		keyOff := p.i
		key, err := p.key()
		if err != nil {
			return err
		}
		if n.ResourceType != "" && string(key) == "resourceType" {
			if sawType {
				p.i = keyOff
				return p.fail("duplicate property resourceType")
			}
			sawType = true
			if err := p.skip(); err != nil {
				return err
			}
		} else {
			ext := len(key) > 0 && key[0] == '_'
			base := key
			if ext {
				base = key[1:]
			}
			c, ok := t.childBytes(base)
			if !ok {
				p.i = keyOff
				e := p.fail("unknown property %q in %s", key, t.Name)
				e.Path += "." + string(key)
				return e
			}
			if ext && (c.Type.Kind != KindPrimitive || c.Type.Name == "xhtml" || c.Element.Attr) {
				p.i = keyOff
				return p.fail("property %q is not allowed: only primitive elements have a '_' form", key)
			}
			si := -1
			for i := range slots {
				if slots[i].child.Element == c.Element {
					if slots[i].child.Name != c.Name {
						p.i = keyOff
						return p.fail("%s and %s are alternatives of one choice element", slots[i].child.Name, c.Name)
					}
					if (ext && slots[i].haveExt) || (!ext && slots[i].haveValue) {
						p.i = keyOff
						return p.fail("duplicate property %q", key)
					}
					si = i
				}
			}
			if si < 0 {
				slots = append(slots, slot{child: c, start: len(p.kids)})
				si = len(slots) - 1
			}
			if err := p.property(n, &slots[si], ext); err != nil {
				return err
			}
		}
		switch p.peek() {
		case ',':
			p.i++
			continue
		case '}':
			p.i++
		default:
			return p.fail("expected ',' or '}' in object")
		}
		break
	}
	p.depth--
	for _, s := range slots {
		if s.child.Type.Kind != KindPrimitive || s.child.Type.Name == "xhtml" || s.child.Element.Attr {
			continue
		}
		for i, k := range p.kids[s.start : s.start+s.n] {
			if !k.HasValue && len(k.Children) == 0 {
				p.stack = append(p.stack, frame{node: k, el: s.child.Element, index: i})
				e := p.fail("%s has neither a value nor extensions (null in both %s and _%s)", k.Name, k.Name, k.Name)
				e.Line, e.Col = k.Line, k.Col
				p.stack = p.stack[:len(p.stack)-1]
				return e
			}
		}
	}
	n.Children = p.ptrs.copyOf(p.kids[base:])
	p.kids = p.kids[:base]
	sortChildren(n, t)
	return nil
}

// sortChildren puts children into canonical order: attribute-represented
// elements (id, url) first, then the schema's element order. It is stable,
// so repetitions keep their order; already-ordered input, the norm, costs
// one linear pass.
func sortChildren(n *Node, t *Type) {
	kids := n.Children
	rank := func(k *Node) int {
		c, _ := t.Child(k.Name)
		if c.Element == nil {
			return 1 << 30
		}
		if c.Element.Attr {
			return c.Element.Order - 1<<20
		}
		return c.Element.Order
	}
	sorted := true
	for i := 1; i < len(kids) && sorted; i++ {
		sorted = rank(kids[i-1]) <= rank(kids[i])
	}
	if sorted {
		return
	}
	ranks := make(map[*Node]int, len(kids))
	for _, k := range kids {
		ranks[k] = rank(k)
	}
	slices.SortStableFunc(kids, func(a, b *Node) int { return cmp.Compare(ranks[a], ranks[b]) })
}

// property decodes the value of one key into the slot's nodes.
func (p *jsonParser) property(n *Node, s *slot, ext bool) error {
	el := s.child.Element
	if ext {
		s.haveExt = true
	} else {
		s.haveValue = true
	}
	merge := s.n > 0 // the other half of a primitive already made the nodes
	if !el.Repeats() {
		if p.peek() == '[' {
			return p.fail("%s is not a repeating element: an array is not allowed", s.child.Name)
		}
		return p.item(n, s, 0, merge, ext, false)
	}
	if p.peek() != '[' {
		return p.fail("%s is a repeating element: its value must be an array", s.child.Name)
	}
	p.i++
	if err := p.enter(); err != nil {
		return err
	}
	i := 0
	if p.peek() == ']' {
		return p.fail("%s: empty arrays are not allowed in FHIR JSON", s.child.Name)
	}
	for {
		if i >= p.lim.MaxArrayLen {
			return p.fail("more than %d repetitions of %s", p.lim.MaxArrayLen, s.child.Name)
		}
		if merge && i >= s.n {
			return p.fail("%s and _%s have different lengths", s.child.Name, s.child.Name)
		}
		if err := p.item(n, s, i, merge, ext, true); err != nil {
			return err
		}
		i++
		switch p.peek() {
		case ',':
			p.i++
			continue
		case ']':
			p.i++
		default:
			return p.fail("expected ',' or ']' in array")
		}
		break
	}
	if merge && i != s.n {
		return p.fail("%s and _%s have different lengths", s.child.Name, s.child.Name)
	}
	p.depth--
	return nil
}

// item decodes one value (or array member) of an element.
func (p *jsonParser) item(n *Node, s *slot, idx int, merge, ext, inArray bool) error {
	c := s.child
	var k *Node
	if merge {
		k = p.kids[s.start+idx]
	} else {
		var err error
		if k, err = p.newNode(); err != nil {
			return err
		}
		k.Name = c.Name
		p.kids = append(p.kids, k)
		s.n++
	}
	p.stack = append(p.stack, frame{node: k, el: c.Element, index: idx})
	defer func() { p.stack = p.stack[:len(p.stack)-1] }()

	if p.peek() == 'n' {
		if !inArray || c.Type.Kind != KindPrimitive {
			return p.fail("null is not allowed here")
		}
		return p.literal("null")
	}
	switch {
	case c.Element.Attr:
		if p.peek() != '"' {
			return p.fail("%s must be a string", c.Name)
		}
		v, err := p.str()
		if err != nil {
			return err
		}
		k.Value, k.HasValue = v, true
		return nil
	case c.Type.Name == "xhtml":
		if p.peek() != '"' {
			return p.fail("div must be a string of XHTML")
		}
		v, err := p.str()
		if err != nil {
			return err
		}
		if err := checkXHTML(v, p.lim); err != nil {
			return p.fail("div is not valid XHTML: %v", err)
		}
		k.XHTML = v
		return nil
	case c.Type.Kind == KindPrimitive && ext:
		return p.object(k, c.Type)
	case c.Type.Kind == KindPrimitive:
		return p.primitive(k, c.Type)
	case c.Type.Kind == KindContainer:
		if p.peek() != '{' {
			return p.fail("%s must be a resource object", c.Name)
		}
		r, err := p.newNode()
		if err != nil {
			return err
		}
		k.Children = p.ptrs.copyOf([]*Node{r})
		return p.resource(r, c.Element)
	default:
		if p.peek() != '{' {
			return p.fail("%s must be an object", c.Name)
		}
		return p.object(k, c.Type)
	}
}

func (p *jsonParser) primitive(k *Node, t *Type) error {
	switch c := p.peek(); {
	case c == '"':
		if t.JSON != JSONString {
			return p.fail("%s must be a JSON %s, not a string", t.Name, jsonKindName(t.JSON))
		}
		v, err := p.str()
		if err != nil {
			return err
		}
		k.Value, k.HasValue = v, true
	case c == 't' || c == 'f':
		if t.JSON != JSONBoolean {
			return p.fail("%s must be a JSON %s, not a boolean", t.Name, jsonKindName(t.JSON))
		}
		lit := "true"
		if c == 'f' {
			lit = "false"
		}
		if err := p.literal(lit); err != nil {
			return err
		}
		k.Value, k.HasValue = lit, true
	case c == '-' || (c >= '0' && c <= '9'):
		if t.JSON != JSONNumber {
			return p.fail("%s must be a JSON %s, not a number", t.Name, jsonKindName(t.JSON))
		}
		start := p.i
		for p.i < len(p.data) && isNumberByte(p.data[p.i]) {
			p.i++
		}
		lit := string(p.data[start:p.i])
		if len(lit) > p.lim.MaxStringLen {
			return p.fail("number longer than %d bytes", p.lim.MaxStringLen)
		}
		if !validNumber(lit, false) {
			p.i = start
			return p.fail("invalid JSON number %q", lit)
		}
		if msg := checkPrimitive(t, lit); msg != "" {
			p.i = start
			return p.fail("%s", msg)
		}
		k.Value, k.HasValue = lit, true
	default:
		return p.fail("%s must be a JSON %s", t.Name, jsonKindName(t.JSON))
	}
	return nil
}

func jsonKindName(k JSONKind) string {
	switch k {
	case JSONNumber:
		return "number"
	case JSONBoolean:
		return "boolean"
	}
	return "string"
}

func isNumberByte(c byte) bool {
	return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

func (p *jsonParser) literal(lit string) error {
	if !bytes.HasPrefix(p.data[p.i:], []byte(lit)) {
		return p.fail("invalid JSON literal")
	}
	p.i += len(lit)
	return nil
}

// skip passes over any JSON value, within the depth limit.
func (p *jsonParser) skip() error {
	switch c := p.peek(); {
	case c == '"':
		_, err := p.rawStr()
		return err
	case c == '{' || c == '[':
		p.i++
		if err := p.enter(); err != nil {
			return err
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		if p.peek() == closer {
			p.i++
			p.depth--
			return nil
		}
		for {
			if c == '{' {
				if _, err := p.key(); err != nil {
					return err
				}
			}
			if err := p.skip(); err != nil {
				return err
			}
			switch p.peek() {
			case ',':
				p.i++
				continue
			case closer:
				p.i++
				p.depth--
				return nil
			}
			return p.fail("expected ',' or '%c'", closer)
		}
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.i
		for p.i < len(p.data) && isNumberByte(p.data[p.i]) {
			p.i++
		}
		if !validNumber(string(p.data[start:p.i]), false) {
			return p.fail("invalid JSON number")
		}
		return nil
	}
	return p.fail("invalid JSON value")
}

// str reads a string value.
func (p *jsonParser) str() (string, error) {
	start := p.i + 1
	b, err := p.rawStr()
	if err != nil {
		return "", err
	}
	if p.i-1-start == len(b) { // no escapes: b is the body's own bytes
		return p.src[start : p.i-1], nil
	}
	return string(b), nil
}

// rawStr reads a string at p.i and returns its unescaped bytes, which alias
// the input when there are no escapes and p.keyBuf otherwise (valid until
// the next call).
func (p *jsonParser) rawStr() ([]byte, error) {
	p.i++ // opening quote
	start := p.i
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			b := p.data[start:p.i]
			p.i++
			if len(b) > p.lim.MaxStringLen {
				return nil, p.fail("string longer than %d bytes", p.lim.MaxStringLen)
			}
			return b, nil
		case c == '\\':
			return p.escapedStr(start)
		case c < 0x20:
			return nil, p.fail("control character in string (must be escaped)")
		case c == 0xEF && p.i+2 < len(p.data) && p.data[p.i+1] == 0xBF && p.data[p.i+2] >= 0xBE:
			return nil, p.fail("U+FFFE and U+FFFF are not allowed in FHIR strings")
		}
		p.i++
	}
	return nil, p.fail("unterminated string")
}

func (p *jsonParser) escapedStr(start int) ([]byte, error) {
	buf := append(p.keyBuf[:0], p.data[start:p.i]...)
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			p.i++
			p.keyBuf = buf
			if len(buf) > p.lim.MaxStringLen {
				return nil, p.fail("string longer than %d bytes", p.lim.MaxStringLen)
			}
			return buf, nil
		case c < 0x20:
			return nil, p.fail("control character in string (must be escaped)")
		case c == 0xEF && p.i+2 < len(p.data) && p.data[p.i+1] == 0xBF && p.data[p.i+2] >= 0xBE:
			return nil, p.fail("U+FFFE and U+FFFF are not allowed in FHIR strings")
		case c != '\\':
			buf = append(buf, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.data) {
			break
		}
		e := p.data[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b', 'f':
			return nil, p.fail("character \\%c is not allowed in FHIR strings (not XML 1.0 text)", e)
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return nil, p.fail("invalid \\u escape")
			}
			if utf16.IsSurrogate(r) {
				var r2 rune = -1
				if p.i+1 < len(p.data) && p.data[p.i] == '\\' && p.data[p.i+1] == 'u' {
					p.i += 2
					r2, ok = p.hex4()
					if !ok {
						return nil, p.fail("invalid \\u escape")
					}
				}
				r = utf16.DecodeRune(r, r2)
				if r == utf8.RuneError {
					return nil, p.fail("unpaired UTF-16 surrogate in \\u escape")
				}
			}
			if r == 0 {
				return nil, p.fail("NUL character in string")
			}
			if !xmlChar(r) {
				// FHIR strings are XML 1.0 text: a value that cannot be
				// written as XML must not be accepted as JSON either.
				return nil, p.fail("character U+%04X is not allowed in FHIR strings", r)
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return nil, p.fail("invalid escape \\%c", e)
		}
	}
	return nil, p.fail("unterminated string")
}

func (p *jsonParser) hex4() (rune, bool) {
	if p.i+4 > len(p.data) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(p.data[p.i:p.i+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	p.i += 4
	return rune(v), true
}

// checkXHTML checks that a narrative div received in JSON is one
// well-formed div element in the XHTML namespace, with none of the
// constructs refused in XML bodies, so that writing it verbatim into XML is
// safe.
func checkXHTML(s string, lim Limits) error {
	if len(s) > lim.MaxStringLen {
		return fmt.Errorf("longer than %d bytes", lim.MaxStringLen)
	}
	if len(s) < 5 || s[0] != '<' {
		return fmt.Errorf("must start with <div")
	}
	d := xml.NewDecoder(bytes.NewReader([]byte(s)))
	d.Strict = true
	depth, count := 0, 0
	var open []xml.Name
	for {
		tok, err := d.RawToken()
		if err == io.EOF {
			if depth != 0 {
				return fmt.Errorf("unexpected end inside the div")
			}
			return nil
		}
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				if count > 0 {
					return fmt.Errorf("content after the div")
				}
				ok := t.Name.Local == "div"
				declared := false
				for _, a := range t.Attr {
					if (t.Name.Space == "" && a.Name.Space == "" && a.Name.Local == "xmlns") ||
						(t.Name.Space != "" && a.Name.Space == "xmlns" && a.Name.Local == t.Name.Space) {
						declared = a.Value == NamespaceXHTML
					}
				}
				if !ok || !declared {
					return fmt.Errorf("the root must be a div declaring the XHTML namespace %s", NamespaceXHTML)
				}
			}
			depth++
			count++
			if depth > lim.MaxDepth || count > lim.MaxElements {
				return fmt.Errorf("too deep or too large")
			}
			open = append(open, t.Name)
		case xml.EndElement:
			if depth == 0 || open[depth-1] != t.Name {
				return fmt.Errorf("end tag </%s> does not match", qname(t.Name))
			}
			open = open[:depth-1]
			depth--
		case xml.CharData:
			if depth == 0 {
				return fmt.Errorf("text outside the div")
			}
		case xml.Comment:
			if depth == 0 {
				return fmt.Errorf("comment outside the div")
			}
		case xml.ProcInst:
			return fmt.Errorf("processing instructions are not allowed")
		case xml.Directive:
			return fmt.Errorf("DTDs and other <!...> declarations are not allowed")
		}
	}
}

// xmlChar reports whether r is allowed in XML 1.0 text.
func xmlChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		(r >= 0x20 && r <= 0xD7FF) || (r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)
}
