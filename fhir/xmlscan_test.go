package fhir

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"reflect"
	"testing"
)

// scanDiff runs encoding/xml's strict RawToken and xmlScanner over data
// side by side and describes the first difference in token, error or
// input offset ("" when there is none).
func scanDiff(data []byte) string {
	std := xml.NewDecoder(bytes.NewReader(data))
	std.Strict = true
	mine := newXMLScanner(data)
	for i := 0; ; i++ {
		st, serr := std.RawToken()
		mt, merr := mine.RawToken()
		if (serr == nil) != (merr == nil) || serr != nil && serr.Error() != merr.Error() {
			return fmt.Sprintf("token %d: error %v, scanner %v", i, serr, merr)
		}
		if so, mo := std.InputOffset(), mine.InputOffset(); so != mo {
			return fmt.Sprintf("token %d: offset %d, scanner %d", i, so, mo)
		}
		if serr != nil {
			return ""
		}
		if !reflect.DeepEqual(xml.CopyToken(st), xml.CopyToken(mt)) {
			return fmt.Sprintf("token %d: %#v, scanner %#v", i, st, mt)
		}
	}
}

// xmlScanCases are the shapes the decoder treats specially: entities,
// line ends, CDATA, comments, directives, declarations, names, quotes and
// every way of ending early.
var xmlScanCases = []string{
	``, ` `, `<`, `<a`, `<a/>`, `<a></a>`, `<a ></a >`, `<a b="1" c='2'/>`, `<a b="1"c="2"/>`, `<a b=1/>`, `<a b/>`,
	`<a b="x<y"/>`, `<a b="x>y"/>`, `<a b="]]>"/>`, `<a>]]></a>`, `<a>]]</a>`, `<a>x]]y</a>`, `<a>&lt;&gt;&amp;&apos;&quot;</a>`,
	`<a>&#65;&#x42;&#X43;</a>`, `<a>&#;</a>`, `<a>&#x;</a>`, `<a>&#0;</a>`, `<a>&#xD800;</a>`, `<a>&#x110000;</a>`, `<a>&#65</a>`,
	`<a>&foo;</a>`, `<a>&foo</a>`, `<a>&</a>`, `<a>&`, `<a>&#`, `<a>&#x`, `<a>&1;</a>`, `<a b="&lt;&#10;&#13;"/>`, `<a b="&bad;"/>`,
	"<a>x\r\ny\rz\n</a>", "<a b=\"x\r\ny\rz\"/>", "<a>\r</a>", "<a>\r&amp;\n</a>", "<a>\x01</a>", "<a b=\"\x01\"/>", "<a>\t</a>",
	`<a><![CDATA[x<y&z]]></a>`, `<a><![CDATA[]]></a>`, `<a><![CDATA[x`, `<a><![CDAT[x]]></a>`, `<a><![`, `<a><!-- c --></a>`,
	`<a><!-- a--b --></a>`, `<a><!---></a>`, `<a><!-x --></a>`, `<a><!--`, `<!DOCTYPE a [<!ENTITY x "y">]><a/>`,
	`<!DOCTYPE a [<!-- c -->]><a/>`, `<!DOCTYPE a '>' "<"><a/>`, `<!DOCTYPE a [<!ELEMENT a ANY><!x>]>`, `<!D`,
	`<?xml version="1.0" encoding="UTF-8"?><a/>`, `<?xml version="1.1"?><a/>`, `<?xml version='1.0' encoding='latin1'?><a/>`,
	`<?xml encoding="utf8"?><a/>`, `<?pi x?><a/>`, `<??><a/>`, `<?xml`, `<?xml ?`, `<? x?>`,
	`<x:a xmlns:x="u"/>`, `<x:y:a/>`, `<:a/>`, `<a:/>`, `<1a/>`, `<.a/>`, `<-a/>`, `<_a.b-c/>`, `<é/>`, `<aé/>`, `<a·/>`, "<a\u0300/>",
	"<\u0300/>", `<a:é/>`, `<é:a/>`, `<a xml:lang="en"/>`, `</a>`, `</a`, `</a b>`, `</>`, `<a></a`, `<a/`, `<a/x>`, `<a =x/>`,
	`<a b = "c" />`, `<a b="c`, `<a b=`, `<a b`, "<a>\u00e9\u2028\U0001F600</a>", "<a>\uFFFE</a>", "<a b=\"\uFFFF\"/>",
	`text<a/>`, `<a/>text`, `<a/> `, `<a/><b/>`,
}

func TestXMLScannerMatchesEncodingXML(t *testing.T) {
	for _, c := range xmlScanCases {
		if d := scanDiff([]byte(c)); d != "" {
			t.Errorf("%q: %s", c, d)
		}
	}
	for _, p := range exampleFiles(t) {
		data := readFile(t, p)
		if d := scanDiff(data); d != "" {
			t.Errorf("%s: %s", p, d)
		}
		// Every prefix ends early somewhere different.
		for n := 0; n < len(data); n += 1 + n/7 {
			if d := scanDiff(data[:n]); d != "" {
				t.Fatalf("%s[:%d]: %s", p, n, d)
			}
		}
	}
}

func FuzzXMLScanner(f *testing.F) {
	for _, c := range xmlScanCases {
		f.Add([]byte(c))
	}
	for _, p := range exampleFiles(f) {
		f.Add(readFile(f, p))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if d := scanDiff(data); d != "" {
			t.Fatal(d)
		}
	})
}

// BenchmarkXMLScannerWalk is BenchmarkRawTokenWalk with the scanner, the
// way ParseXML drives it (no token values).
func BenchmarkXMLScannerWalk(b *testing.B) {
	c := loadBenchCorpus(b)
	b.SetBytes(c.xmlBytes)
	b.ReportAllocs()
	for b.Loop() {
		for _, d := range c.xml {
			s := newXMLScanner(d)
			for {
				if _, err := s.next(); err == io.EOF {
					break
				} else if err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

// TestXMLScannerAttrValues covers the one-pass attribute value path: the
// other quote, '>' and non-ASCII inside a value, and every byte that sends
// it to the decoder's path, each compared with encoding/xml.
func TestXMLScannerAttrValues(t *testing.T) {
	for _, c := range []string{
		`<a b='x"y'/>`, `<a b="x'y"/>`, `<a b="é"/>`, `<a b="a>b>"/>`, `<a b=""/>`, `<a b=''/>`, "<a b=\"\xff\"/>",
		"<a b=\"\xc3\"/>", "<a b=\"x\ty\nz\"/>", "<a b=\"x\x7fy\"/>", "<a b=\"\uFFFE\"/>", `<a b="x&amp;y"/>`, `<a b="x`,
		"<a b=\"x\x00\"/>", `<a b="x<"/>`, `<a b="1" c='2' d="é'"/>`,
	} {
		if d := scanDiff([]byte(c)); d != "" {
			t.Errorf("%q: %s", c, d)
		}
	}
}
