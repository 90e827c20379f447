package fhir

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// xmlScanner is encoding/xml's Decoder.RawToken in strict mode, ported to
// scan a byte slice in place. The publish path parses every XML bundle
// (twice, counting delivery's fan-out) and the profiles of emsd showed
// encoding/xml's per-byte io.ByteReader calls and buffer copies as the
// largest single cost of a publish. The port keeps the decoder's grammar,
// decoding and error messages byte for byte (FuzzXMLScanner compares the
// two token by token, error by error and offset by offset); what changes
// is that text and attribute values without entities or carriage returns
// are sliced rather than copied byte by byte.
type xmlScanner struct {
	data []byte
	// str is data as one string: names and attribute values that need no
	// decoding are substrings of it rather than an allocation each.
	str string
	off int
	err error
	buf []byte

	needClose bool
	toClose   xml.Name

	// The current token, valid until the next call to next: its kind,
	// the element name (start and end), the attributes (start; the slice
	// is reused), and the bytes of text, comment, directive or
	// instruction, which may alias the input.
	kind   tokKind
	name   xml.Name
	attr   []xml.Attr
	text   []byte
	target string
}

type tokKind uint8

const (
	tokNone tokKind = iota
	tokStart
	tokEnd
	tokText
	tokComment
	tokProcInst
	tokDirective
)

func newXMLScanner(data []byte) *xmlScanner {
	return &xmlScanner{data: data, str: string(data)}
}

// RawToken returns the next token as encoding/xml's type (tests compare
// the two decoders through it; the parser uses next, which allocates no
// token).
func (d *xmlScanner) RawToken() (xml.Token, error) {
	k, err := d.next()
	if err != nil {
		return nil, err
	}
	switch k {
	case tokStart:
		return xml.StartElement{Name: d.name, Attr: append([]xml.Attr{}, d.attr...)}, nil
	case tokEnd:
		return xml.EndElement{Name: d.name}, nil
	case tokText:
		return xml.CharData(d.text), nil
	case tokComment:
		return xml.Comment(d.text), nil
	case tokProcInst:
		return xml.ProcInst{Target: d.target, Inst: d.text}, nil
	default:
		return xml.Directive(d.text), nil
	}
}

// InputOffset is Decoder.InputOffset: the end of the last token.
func (d *xmlScanner) InputOffset() int64 { return int64(d.off) }

func (d *xmlScanner) syntaxError(msg string) error {
	return &xml.SyntaxError{Msg: msg, Line: 1 + bytes.Count(d.data[:d.off], []byte{'\n'})}
}

func (d *xmlScanner) getc() (byte, bool) {
	if d.err != nil {
		return 0, false
	}
	if d.off >= len(d.data) {
		d.err = io.EOF
		return 0, false
	}
	b := d.data[d.off]
	d.off++
	return b, true
}

func (d *xmlScanner) mustgetc() (byte, bool) {
	// The common case, small enough to inline into the scanner's loops.
	if d.err == nil && d.off < len(d.data) {
		b := d.data[d.off]
		d.off++
		return b, true
	}
	return d.mustgetcEnd()
}

// mustgetcEnd is mustgetc at the end of the input or after an error.
func (d *xmlScanner) mustgetcEnd() (byte, bool) {
	b, ok := d.getc()
	if !ok && d.err == io.EOF {
		d.err = d.syntaxError("unexpected EOF")
	}
	return b, ok
}

func (d *xmlScanner) ungetc() { d.off-- }

// next reads the next token into the scanner's fields. It is
// Decoder.RawToken with Strict set and no CharsetReader, Entity map or
// AutoClose.
func (d *xmlScanner) next() (tokKind, error) {
	d.kind = tokNone
	if d.err != nil {
		return tokNone, d.err
	}
	if d.needClose {
		d.needClose = false
		d.name = d.toClose
		return d.emit(tokEnd)
	}
	b, ok := d.getc()
	if !ok {
		return tokNone, d.err
	}
	if b != '<' {
		d.ungetc()
		data := d.chars(-1, false)
		if data == nil {
			return tokNone, d.err
		}
		d.text = data
		return d.emit(tokText)
	}
	if b, ok = d.mustgetc(); !ok {
		return tokNone, d.err
	}
	switch b {
	case '/':
		name, ok := d.nsname()
		if !ok {
			if d.err == nil {
				d.err = d.syntaxError("expected element name after </")
			}
			return tokNone, d.err
		}
		d.space()
		if b, ok = d.mustgetc(); !ok {
			return tokNone, d.err
		}
		if b != '>' {
			d.err = d.syntaxError("invalid characters between </" + name.Local + " and >")
			return tokNone, d.err
		}
		d.name = name
		return d.emit(tokEnd)

	case '?':
		target, ok := d.readXMLName()
		if !ok {
			if d.err == nil {
				d.err = d.syntaxError("expected target name after <?")
			}
			return tokNone, d.err
		}
		d.space()
		start := d.off
		var b0 byte
		for {
			if b, ok = d.mustgetc(); !ok {
				return tokNone, d.err
			}
			if b0 == '?' && b == '>' {
				break
			}
			b0 = b
		}
		data := d.data[start : d.off-2]
		if target == "xml" {
			content := string(data)
			ver := xmlProcInst("version", content)
			if ver != "" && ver != "1.0" {
				d.err = fmt.Errorf("xml: unsupported version %q; only version 1.0 is supported", ver)
				return tokNone, d.err
			}
			enc := xmlProcInst("encoding", content)
			if enc != "" && enc != "utf-8" && enc != "UTF-8" && !strings.EqualFold(enc, "utf-8") {
				d.err = fmt.Errorf("xml: encoding %q declared but Decoder.CharsetReader is nil", enc)
				return tokNone, d.err
			}
		}
		d.target, d.text = target, data
		return d.emit(tokProcInst)

	case '!':
		return d.bang()
	}

	d.ungetc()
	name, ok := d.nsname()
	if !ok {
		if d.err == nil {
			d.err = d.syntaxError("expected element name after <")
		}
		return tokNone, d.err
	}
	d.attr = d.attr[:0]
	empty := false
	for {
		d.space()
		if b, ok = d.mustgetc(); !ok {
			return tokNone, d.err
		}
		if b == '/' {
			empty = true
			if b, ok = d.mustgetc(); !ok {
				return tokNone, d.err
			}
			if b != '>' {
				d.err = d.syntaxError("expected /> in element")
				return tokNone, d.err
			}
			break
		}
		if b == '>' {
			break
		}
		d.ungetc()
		var a xml.Attr
		if a.Name, ok = d.nsname(); !ok {
			if d.err == nil {
				d.err = d.syntaxError("expected attribute name in element")
			}
			return tokNone, d.err
		}
		d.space()
		if b, ok = d.mustgetc(); !ok {
			return tokNone, d.err
		}
		if b != '=' {
			d.err = d.syntaxError("attribute name without = in element")
			return tokNone, d.err
		}
		d.space()
		if b, ok = d.mustgetc(); !ok {
			return tokNone, d.err
		}
		if b != '"' && b != '\'' {
			d.err = d.syntaxError("unquoted or missing attribute value in element")
			return tokNone, d.err
		}
		start := d.off
		data := d.chars(int(b), false)
		if data == nil {
			return tokNone, d.err
		}
		if len(data) > 0 && &data[0] == &d.data[start] {
			a.Value = d.str[start : start+len(data)] // undecoded: share the input
		} else {
			a.Value = string(data)
		}
		d.attr = append(d.attr, a)
	}
	if empty {
		d.needClose = true
		d.toClose = name
	}
	d.name = name
	return d.emit(tokStart)
}

func (d *xmlScanner) emit(k tokKind) (tokKind, error) {
	d.kind = k
	return k, nil
}

// bang reads what follows "<!": a comment, a CDATA section or a directive.
func (d *xmlScanner) bang() (tokKind, error) {
	b, ok := d.mustgetc()
	if !ok {
		return tokNone, d.err
	}
	switch b {
	case '-':
		if b, ok = d.mustgetc(); !ok {
			return tokNone, d.err
		}
		if b != '-' {
			d.err = d.syntaxError("invalid sequence <!- not part of <!--")
			return tokNone, d.err
		}
		start := d.off
		var b0, b1 byte
		for {
			if b, ok = d.mustgetc(); !ok {
				return tokNone, d.err
			}
			if b0 == '-' && b1 == '-' {
				if b != '>' {
					d.err = d.syntaxError(`invalid sequence "--" not allowed in comments`)
					return tokNone, d.err
				}
				break
			}
			b0, b1 = b1, b
		}
		d.text = d.data[start : d.off-3]
		return d.emit(tokComment)

	case '[':
		for i := 0; i < 6; i++ {
			if b, ok = d.mustgetc(); !ok {
				return tokNone, d.err
			}
			if b != "CDATA["[i] {
				d.err = d.syntaxError("invalid <![ sequence")
				return tokNone, d.err
			}
		}
		data := d.chars(-1, true)
		if data == nil {
			return tokNone, d.err
		}
		d.text = data
		return d.emit(tokText)
	}

	// A directive (<!DOCTYPE ...>): FHIR refuses them, but the token must
	// end where the decoder's does so that errors point to the same place.
	buf := []byte{b}
	inquote := uint8(0)
	depth := 0
	for {
		if b, ok = d.mustgetc(); !ok {
			return tokNone, d.err
		}
		if inquote == 0 && b == '>' && depth == 0 {
			break
		}
	HandleB:
		buf = append(buf, b)
		switch {
		case b == inquote:
			inquote = 0
		case inquote != 0:
		case b == '\'' || b == '"':
			inquote = b
		case b == '>' && inquote == 0:
			depth--
		case b == '<' && inquote == 0:
			s := "!--"
			for i := 0; i < len(s); i++ {
				if b, ok = d.mustgetc(); !ok {
					return tokNone, d.err
				}
				if b != s[i] {
					buf = append(buf, s[:i]...)
					depth++
					goto HandleB
				}
			}
			buf = buf[:len(buf)-1]
			var b0, b1 byte
			for {
				if b, ok = d.mustgetc(); !ok {
					return tokNone, d.err
				}
				if b0 == '-' && b1 == '-' && b == '>' {
					break
				}
				b0, b1 = b1, b
			}
			buf = append(buf, ' ')
		}
	}
	d.text = buf
	return d.emit(tokDirective)
}

func (d *xmlScanner) space() {
	for d.off < len(d.data) {
		switch d.data[d.off] {
		case ' ', '\r', '\n', '\t':
			d.off++
		default:
			return
		}
	}
	if d.err == nil {
		// getc at the end sets io.EOF, which a later mustgetc turns into
		// "unexpected EOF".
		d.err = io.EOF
	}
}

// plainText reports whether character data s needs none of text's
// rewriting: no entity, no carriage return and no "]]>"; every byte is in
// the XML character range (multi-byte runes are checked by the caller).
func plainText(s []byte) (plain, ascii bool) {
	ascii = true
	for i, c := range s {
		if plainByte[c] {
			continue
		}
		switch {
		case c == '&' || c == '\r':
			return false, false
		case c == '>' && i >= 2 && s[i-1] == ']' && s[i-2] == ']':
			return false, false
		case c < 0x20 && c != '\t' && c != '\n':
			return false, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return true, ascii
}

// chars reads character data (quote < 0), a quoted attribute value (quote
// is the quote byte) or a CDATA section's content, as Decoder.text does.
// The result may alias the input.
// plainByte marks the bytes plainText passes over without a second look:
// ASCII other than '&', '>', and control characters except tab and newline.
var plainByte = func() (t [256]bool) {
	for c := range utf8.RuneSelf {
		t[c] = c != '&' && c != '>' && (c >= 0x20 || c == '\t' || c == '\n')
	}
	return t
}()

// attrByte marks the bytes a quoted attribute value's fast path passes
// over: plainByte's, and '>', which needs no escaping inside quotes, but
// not the quotes themselves or '<'.
var attrByte = func() (t [256]bool) {
	t = plainByte
	t['>'] = true
	t['"'], t['\''], t['<'] = false, false, false
	return t
}()

func (d *xmlScanner) chars(quote int, cdata bool) []byte {
	if quote >= 0 && d.err == nil {
		// Fast path for an attribute value, short as a rule: one pass to
		// the closing quote over bytes that need no rewriting. Anything
		// else ('<', '&', '\r', a control character, no closing quote)
		// is left to slowChars, which rewrites or reports it.
		rest := d.data[d.off:]
		q, ascii := byte(quote), true
		for i, c := range rest {
			if attrByte[c] {
				continue
			}
			switch {
			case c == q:
				seg := rest[:i]
				if !ascii && !validChars(seg) {
					return d.slowChars(quote, cdata)
				}
				d.off += i + 1
				return seg
			case c == '"' || c == '\'':
				continue // the other quote
			case c >= utf8.RuneSelf:
				ascii = false
				continue
			}
			break
		}
		return d.slowChars(quote, cdata)
	}
	if !cdata && d.err == nil {
		// Fast path for text: up to the next '<' with nothing to rewrite.
		rest := d.data[d.off:]
		if end := bytes.IndexByte(rest, '<'); end >= 0 {
			seg := rest[:end]
			if plain, ascii := plainText(seg); plain && (ascii || validChars(seg)) {
				d.off += end
				return seg
			}
		}
	}
	return d.slowChars(quote, cdata)
}

func validChars(s []byte) bool {
	for len(s) > 0 {
		r, size := utf8.DecodeRune(s)
		if r == utf8.RuneError && size == 1 || !isInCharacterRange(r) {
			return false
		}
		s = s[size:]
	}
	return true
}

var xmlEntity = map[string]rune{"lt": '<', "gt": '>', "amp": '&', "apos": '\'', "quot": '"'}

// slowChars is Decoder.text, line for line.
func (d *xmlScanner) slowChars(quote int, cdata bool) []byte {
	var b0, b1 byte
	var trunc int
	d.buf = d.buf[:0]
Input:
	for {
		b, ok := d.getc()
		if !ok {
			if cdata {
				if d.err == io.EOF {
					d.err = d.syntaxError("unexpected EOF in CDATA section")
				}
				return nil
			}
			break Input
		}
		if quote < 0 && b0 == ']' && b1 == ']' && b == '>' {
			if cdata {
				trunc = 2
				break Input
			}
			d.err = d.syntaxError("unescaped ]]> not in CDATA section")
			return nil
		}
		if b == '<' && !cdata {
			if quote >= 0 {
				d.err = d.syntaxError("unescaped < inside quoted string")
				return nil
			}
			d.ungetc()
			break Input
		}
		if quote >= 0 && b == byte(quote) {
			break Input
		}
		if b == '&' && !cdata {
			before := len(d.buf)
			d.buf = append(d.buf, '&')
			var text string
			var haveText bool
			if b, ok = d.mustgetc(); !ok {
				return nil
			}
			if b == '#' {
				d.buf = append(d.buf, b)
				if b, ok = d.mustgetc(); !ok {
					return nil
				}
				base := 10
				if b == 'x' {
					base = 16
					d.buf = append(d.buf, b)
					if b, ok = d.mustgetc(); !ok {
						return nil
					}
				}
				start := len(d.buf)
				for '0' <= b && b <= '9' ||
					base == 16 && 'a' <= b && b <= 'f' ||
					base == 16 && 'A' <= b && b <= 'F' {
					d.buf = append(d.buf, b)
					if b, ok = d.mustgetc(); !ok {
						return nil
					}
				}
				if b != ';' {
					d.ungetc()
				} else {
					s := string(d.buf[start:])
					d.buf = append(d.buf, ';')
					n, err := strconv.ParseUint(s, base, 64)
					if err == nil && n <= unicode.MaxRune {
						text = string(rune(n))
						haveText = true
					}
				}
			} else {
				d.ungetc()
				if !d.readName() {
					if d.err != nil {
						return nil
					}
				}
				if b, ok = d.mustgetc(); !ok {
					return nil
				}
				if b != ';' {
					d.ungetc()
				} else {
					name := d.buf[before+1:]
					d.buf = append(d.buf, ';')
					if isXMLName(name) {
						if r, ok := xmlEntity[string(name)]; ok {
							text = string(r)
							haveText = true
						}
					}
				}
			}
			if haveText {
				d.buf = append(d.buf[:before], text...)
				b0, b1 = 0, 0
				continue Input
			}
			ent := string(d.buf[before:])
			if ent[len(ent)-1] != ';' {
				ent += " (no semicolon)"
			}
			d.err = d.syntaxError("invalid character entity " + ent)
			return nil
		}
		if b == '\r' {
			d.buf = append(d.buf, '\n')
		} else if b1 == '\r' && b == '\n' {
			// \r\n: the \n is written already.
		} else {
			d.buf = append(d.buf, b)
		}
		b0, b1 = b1, b
	}
	data := d.buf[:len(d.buf)-trunc]
	buf := data
	for len(buf) > 0 {
		r, size := utf8.DecodeRune(buf)
		if r == utf8.RuneError && size == 1 {
			d.err = d.syntaxError("invalid UTF-8")
			return nil
		}
		buf = buf[size:]
		if !isInCharacterRange(r) {
			d.err = d.syntaxError(fmt.Sprintf("illegal character code %U", r))
			return nil
		}
	}
	// The buffer is reused by the next call: hand out a copy, never nil
	// (nil means an error).
	out := make([]byte, len(data))
	copy(out, data)
	return out
}

func isInCharacterRange(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD ||
		r >= 0x10000 && r <= 0x10FFFF
}

func (d *xmlScanner) nsname() (xml.Name, bool) {
	// Fast path: an ASCII name starting with a letter, '_' or ':' and
	// followed by an ASCII byte, which is every name FHIR writes. It ends
	// where readName would, and what readXMLName would check (the first
	// character) is checked here; anything else (a non-ASCII byte, the
	// end of the input, a bad first character, a pending error) takes
	// the decoder's path, which reports it.
	if d.err == nil {
		start, i, colon, colons := d.off, d.off, -1, 0
		for i < len(d.data) && nameByte[d.data[i]] {
			if d.data[i] == ':' {
				colon = i
				colons++
			}
			i++
		}
		if i > start && i < len(d.data) && d.data[i] < utf8.RuneSelf && nameStart(d.data[start]) {
			d.off = i
			switch {
			case colons > 1:
				return xml.Name{}, false
			case colons == 0 || colon == start || colon == i-1:
				return xml.Name{Local: d.str[start:i]}, true
			}
			return xml.Name{Space: d.str[start:colon], Local: d.str[colon+1 : i]}, true
		}
	}
	s, ok := d.readXMLName()
	if !ok {
		return xml.Name{}, false
	}
	if strings.Count(s, ":") > 1 {
		return xml.Name{}, false
	}
	space, local, found := strings.Cut(s, ":")
	if !found || space == "" || local == "" {
		return xml.Name{Local: s}, true
	}
	return xml.Name{Space: space, Local: local}, true
}

// readXMLName is Decoder.name: it reads an XML name and, like the
// decoder, leaves d.err unset when there is none, so that the caller can
// say what it expected.
func (d *xmlScanner) readXMLName() (string, bool) {
	start := d.off
	d.buf = d.buf[:0]
	if !d.readName() {
		return "", false
	}
	if !isXMLName(d.data[start:d.off]) {
		d.err = d.syntaxError("invalid XML name: " + string(d.data[start:d.off]))
		return "", false
	}
	return d.str[start:d.off], true
}

// readName is Decoder.readName; the name's bytes are appended to d.buf
// (where an entity reference needs them) and remain at data[start:off].
func (d *xmlScanner) readName() bool {
	b, ok := d.mustgetc()
	if !ok {
		return false
	}
	if b < utf8.RuneSelf && !isNameByte(b) {
		d.ungetc()
		return false
	}
	d.buf = append(d.buf, b)
	for {
		if b, ok = d.mustgetc(); !ok {
			return false
		}
		if b < utf8.RuneSelf && !isNameByte(b) {
			d.ungetc()
			break
		}
		d.buf = append(d.buf, b)
	}
	return true
}

func isNameByte(c byte) bool { return nameByte[c] }

// nameByte is isNameByte as a table, for the scanner's name loops.
var nameByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
			c == '_' || c == ':' || c == '.' || c == '-'
	}
	return t
}()

// nameStart is the check isXMLName makes of an ASCII name's first byte.
func nameStart(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || c == '_' || c == ':'
}

// isXMLName is encoding/xml's isName. ASCII names, all that FHIR and its
// XHTML use, are checked here; any other name is checked by encoding/xml
// itself on a one-element probe document, so that its Unicode tables stay
// the only definition. Colons become underscores in the probe (both are
// allowed anywhere in a name), so that the probe is never a prefixed name.
func isXMLName(s []byte) bool {
	if len(s) == 0 {
		return false
	}
	ascii := true
	for _, c := range s {
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return nameStart(s[0])
	}
	probe := append(append([]byte{'<'}, bytes.ReplaceAll(s, []byte{':'}, []byte{'_'})...), '/', '>')
	_, err := xml.NewDecoder(bytes.NewReader(probe)).RawToken()
	return err == nil
}

// xmlProcInst is encoding/xml's procInst: a pseudo-attribute of the XML
// declaration, as loosely as the decoder reads it.
func xmlProcInst(param, s string) string {
	param = param + "="
	lenp := len(param)
	i := 0
	var sep byte
	for i < len(s) {
		sub := s[i:]
		k := strings.Index(sub, param)
		if k < 0 || lenp+k >= len(sub) {
			return ""
		}
		i += lenp + k + 1
		if c := sub[lenp+k]; c == '\'' || c == '"' {
			sep = c
			break
		}
	}
	if sep == 0 {
		return ""
	}
	j := strings.IndexByte(s[i:], sep)
	if j < 0 {
		return ""
	}
	return s[i : i+j]
}
