package fhir

import (
	"bytes"
	"fmt"
	"mime"
	"strings"
	"unicode/utf8"
)

// Format is a FHIR wire format.
type Format uint8

// Wire formats.
const (
	FormatUnknown Format = iota
	FormatXML
	FormatJSON
)

func (f Format) String() string {
	switch f {
	case FormatXML:
		return "xml"
	case FormatJSON:
		return "json"
	}
	return "unknown"
}

// ContentType is the media type this service answers with for the format.
func (f Format) ContentType() string {
	switch f {
	case FormatXML:
		return "application/fhir+xml;charset=utf-8"
	case FormatJSON:
		return "application/fhir+json;charset=utf-8"
	}
	return ""
}

// Sniff guesses the format of a body from its first non-space byte (after
// an optional UTF-8 byte order mark): '<' is XML, '{' is JSON.
func Sniff(data []byte) Format {
	data = bytes.TrimPrefix(data, utf8BOM)
	for _, c := range data {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '<':
			return FormatXML
		case '{':
			return FormatJSON
		}
		return FormatUnknown
	}
	return FormatUnknown
}

// FormatForContentType maps a Content-Type or Accept media type (parameters
// such as charset allowed) to a format. FHIR STU3 names
// application/fhir+xml and application/fhir+json; the DSTU2 spellings
// (application/xml+fhir, application/json+fhir) and plain XML/JSON types are
// accepted because NEMS clients still send them.
func FormatForContentType(ct string) (Format, bool) {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return FormatUnknown, false
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return FormatUnknown, false
	}
	return formatForMediaType(mt)
}

func formatForMediaType(mt string) (Format, bool) {
	switch strings.ToLower(mt) {
	case "application/fhir+xml", "application/xml+fhir", "application/xml", "text/xml":
		return FormatXML, true
	case "application/fhir+json", "application/json+fhir", "application/json", "text/json":
		return FormatJSON, true
	}
	return FormatUnknown, false
}

// FormatForParam maps a _format query parameter: "xml", "json" or one of
// the media types accepted by FormatForContentType. A space stands for '+',
// because clients rarely escape the '+' of application/fhir+json in a query
// string and form decoding turns it into a space.
func FormatForParam(v string) (Format, bool) {
	v = strings.ReplaceAll(strings.TrimSpace(v), " ", "+")
	switch strings.ToLower(v) {
	case "xml":
		return FormatXML, true
	case "json":
		return FormatJSON, true
	}
	return FormatForContentType(v)
}

// Parse decodes a body in the given format.
func Parse(data []byte, f Format, lim Limits) (*Node, error) {
	switch f {
	case FormatXML:
		return ParseXML(data, lim)
	case FormatJSON:
		return ParseJSON(data, lim)
	}
	return nil, &DecodeError{Msg: "unknown format: the body is neither FHIR XML nor FHIR JSON"}
}

// Marshal encodes a resource tree in the given format.
func Marshal(n *Node, f Format, pretty bool) ([]byte, error) {
	switch f {
	case FormatXML:
		return marshalXML(n, pretty)
	case FormatJSON:
		return marshalJSON(n, pretty)
	}
	return nil, fmt.Errorf("fhir: marshal: unknown format")
}

// Limits bound what a parser accepts, so that a hostile body costs bounded
// time and memory. A zero field takes its DefaultLimits value.
type Limits struct {
	// MaxDepth is the deepest element nesting (XML elements or JSON
	// objects and arrays).
	MaxDepth int
	// MaxElements is the most elements (XML) or values (JSON) in one body.
	MaxElements int
	// MaxStringLen is the longest primitive value or narrative div, in
	// bytes.
	MaxStringLen int
	// MaxArrayLen is the most repetitions of one element within its parent.
	MaxArrayLen int
}

// DefaultLimits are generous for event messages (a few tens of KB) and
// still stop a hostile body early.
func DefaultLimits() Limits {
	return Limits{MaxDepth: 64, MaxElements: 200_000, MaxStringLen: 1 << 20, MaxArrayLen: 10_000}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxElements <= 0 {
		l.MaxElements = d.MaxElements
	}
	if l.MaxStringLen <= 0 {
		l.MaxStringLen = d.MaxStringLen
	}
	if l.MaxArrayLen <= 0 {
		l.MaxArrayLen = d.MaxArrayLen
	}
	return l
}

// DecodeError is a body that is not well-formed FHIR: bad syntax, a
// forbidden construct (DTD, entity, processing instruction), an unknown
// element or a broken limit. The HTTP layer answers it with 400
// MESSAGE_NOT_WELL_FORMED, quoting Error() and Path.
type DecodeError struct {
	// Line and Col locate the fault in the body (1-based; 0 when unknown).
	Line, Col int
	// Path is the FHIRPath location of the element being decoded, when
	// known ("Bundle.entry[1].resource.name[0]").
	Path string
	Msg  string
}

func (e *DecodeError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d, column %d: ", e.Line, e.Col)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// checkBytes rejects what neither parser may see: invalid UTF-8 and NUL
// (both are checked up front at memory speed, so the tokenizers need not).
func checkBytes(data []byte) *DecodeError {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		e := &DecodeError{Msg: "NUL byte in body"}
		e.Line, e.Col = lineCol(data, i)
		return e
	}
	if !utf8.Valid(data) {
		i := 0
		for i < len(data) {
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			i += size
		}
		e := &DecodeError{Msg: "body is not valid UTF-8"}
		e.Line, e.Col = lineCol(data, i)
		return e
	}
	return nil
}

func lineCol(data []byte, off int) (int, int) {
	if off > len(data) {
		off = len(data)
	}
	line := 1 + bytes.Count(data[:off], []byte{'\n'})
	col := off - bytes.LastIndexByte(data[:off], '\n')
	return line, col
}

// posTracker turns monotonically increasing byte offsets into line and
// column numbers in amortised O(1).
type posTracker struct {
	data      []byte
	off       int
	line      int
	lineStart int
}

func (p *posTracker) at(off int) (int, int) {
	if p.line == 0 {
		p.line = 1
	}
	if off < p.off {
		return lineCol(p.data, off)
	}
	if off > len(p.data) {
		off = len(p.data)
	}
	seg := p.data[p.off:off]
	for {
		i := bytes.IndexByte(seg, '\n')
		if i < 0 {
			break
		}
		p.line++
		p.lineStart = off - len(seg) + i + 1
		seg = seg[i+1:]
	}
	p.off = off
	return p.line, off - p.lineStart + 1
}

// slabSize caps the first node slab: an estimate from a hostile body must
// not commit memory the element limit would never let the parse use.
func slabSize(estimate int, lim Limits) int {
	return min(estimate, lim.MaxElements+1, 4096)
}

// nodeSlab hands out Nodes from chunks, so a parse makes one allocation per
// 128 elements instead of one per element.
type nodeSlab struct{ buf []Node }

// ptrSlab holds the Children slices of a parse: each finished element's
// children are copied in as one exact-capacity slice, so a parse makes one
// allocation per chunk instead of growing every element's slice one append
// at a time.
type ptrSlab struct{ buf []*Node }

func (s *ptrSlab) copyOf(kids []*Node) []*Node {
	if len(kids) == 0 {
		return nil
	}
	if cap(s.buf)-len(s.buf) < len(kids) {
		s.buf = make([]*Node, 0, max(256, len(kids)))
	}
	start := len(s.buf)
	s.buf = append(s.buf, kids...)
	return s.buf[start:len(s.buf):len(s.buf)]
}

func (s *nodeSlab) new() *Node {
	if len(s.buf) == cap(s.buf) {
		s.buf = make([]Node, 0, 128)
	}
	s.buf = s.buf[:len(s.buf)+1]
	return &s.buf[len(s.buf)-1]
}
