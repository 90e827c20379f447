package fhir

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/golden")

// knownInvalid are published examples that are not valid STU3 and must be
// refused, with the reason.
var knownInvalid = map[string]string{
	"nems/feature-DCH_Release_Changes/allergies-adverse-reactions-delete.xml": "unknown element <onsetdateTime>",
	"nems/feature-DCH_Release_Changes/allergies-adverse-reactions-new.xml":    "unknown element <onsetdateTime>",
	"nems/feature-DCH_Release_Changes/allergies-adverse-reactions-update.xml": "unknown element <onsetdateTime>",
	"nems/feature-DCH_Release_Changes/legal-information-new.xml":              "effectivePeriod occurs more than once",
}

func exampleFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir("testdata/examples", func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".xml") {
			files = append(files, p)
		}
		return err
	})
	if err != nil || len(files) < 100 {
		t.Fatalf("example corpus: %d files, %v", len(files), err)
	}
	return files
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// diffTrees returns the first difference between two trees, ignoring
// source positions, or "".
func diffTrees(a, b *Node, loc string) string {
	switch {
	case a == nil || b == nil:
		if a != b {
			return loc + ": one side missing"
		}
		return ""
	case a.Name != b.Name:
		return fmt.Sprintf("%s: name %q vs %q", loc, a.Name, b.Name)
	case a.ResourceType != b.ResourceType:
		return fmt.Sprintf("%s: resourceType %q vs %q", loc, a.ResourceType, b.ResourceType)
	case a.HasValue != b.HasValue || a.Value != b.Value:
		return fmt.Sprintf("%s: value %q(%v) vs %q(%v)", loc, a.Value, a.HasValue, b.Value, b.HasValue)
	case a.XHTML != b.XHTML:
		return fmt.Sprintf("%s: xhtml differs", loc)
	case len(a.Children) != len(b.Children):
		return fmt.Sprintf("%s: %d vs %d children", loc, len(a.Children), len(b.Children))
	}
	for i := range a.Children {
		if d := diffTrees(a.Children[i], b.Children[i], fmt.Sprintf("%s/%d:%s", loc, i, a.Children[i].Name)); d != "" {
			return d
		}
	}
	return ""
}

func TestRoundTripExamples(t *testing.T) {
	for _, f := range exampleFiles(t) {
		rel := strings.TrimPrefix(filepath.ToSlash(f), "testdata/examples/")
		t.Run(rel, func(t *testing.T) {
			data := readFile(t, f)
			orig, err := ParseXML(data, Limits{})
			if want, bad := knownInvalid[rel]; bad {
				var de *DecodeError
				if !errors.As(err, &de) || !strings.Contains(de.Msg, want) {
					t.Fatalf("known-invalid example: got %v, want a DecodeError containing %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// JSON is always in schema order; bring the XML tree there too
			// (some examples are out of order, which CheckElementOrder
			// reports separately).
			SortElements(orig)
			x1, err := MarshalXML(orig)
			if err != nil {
				t.Fatal(err)
			}
			for _, pretty := range []bool{false, true} {
				js, err := Marshal(orig, FormatJSON, pretty)
				if err != nil {
					t.Fatal(err)
				}
				back, err := ParseJSON(js, Limits{})
				if err != nil {
					t.Fatalf("re-parse JSON: %v", err)
				}
				if d := diffTrees(orig, back, orig.Name); d != "" {
					t.Fatalf("XML->JSON->tree differs: %s", d)
				}
				x2, err := MarshalXML(back)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(x1, x2) {
					t.Fatalf("XML->JSON->XML differs")
				}
			}
			// The written XML reads back to the same tree (writer and
			// parser agree, escaping included).
			again, err := ParseXML(x1, Limits{})
			if err != nil {
				t.Fatalf("re-parse XML: %v", err)
			}
			if d := diffTrees(orig, again, orig.Name); d != "" {
				t.Fatalf("XML->XML differs: %s", d)
			}
			pretty, err := MarshalXMLIndent(orig)
			if err != nil {
				t.Fatal(err)
			}
			if again, err = ParseXML(pretty, Limits{}); err != nil {
				t.Fatalf("re-parse indented XML: %v", err)
			}
			if d := diffTrees(orig, again, orig.Name); d != "" {
				t.Fatalf("indented XML differs: %s", d)
			}
		})
	}
}

// TestElementOrderRIExample: the reference implementation's publish example
// is out of XSD order in three places (the INDEX notes the two in Patient;
// MessageHeader.source has name after contact too).
func TestElementOrderRIExample(t *testing.T) {
	n, err := ParseXML(readFile(t, "testdata/examples/nems-ri/pds-change-of-gp-1.xml"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, is := range CheckElementOrder(n) {
		if is.Severity != SeverityError || is.Code != InvalidResource || is.IssueType != "structure" {
			t.Errorf("issue %+v: want error INVALID_RESOURCE structure", is)
		}
		got = append(got, is.Expression)
	}
	want := []string{
		"Bundle.entry[0].resource.source.name",
		"Bundle.entry[2].resource.meta.versionId",
		"Bundle.entry[2].resource.address[0].text",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("order issues:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	is := CheckElementOrder(n)[1]
	if !strings.Contains(is.Diagnostics, "versionId, profile") {
		t.Errorf("diagnostic should name the expected order: %s", is.Diagnostics)
	}
	// After sorting, nothing is reported.
	SortElements(n)
	if left := CheckElementOrder(n); len(left) != 0 {
		t.Fatalf("after SortElements: %v", left)
	}
}

func TestElementOrderRules(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string
	}{
		{"in order", `<Patient xmlns="http://hl7.org/fhir"><id value="a"/><name><family value="X"/><given value="A"/><given value="B"/></name></Patient>`, nil},
		{"split repetition", `<Patient xmlns="http://hl7.org/fhir"><name><given value="A"/><prefix value="Dr"/><given value="B"/></name></Patient>`,
			[]string{"Patient.name[0].given[1]"}},
		{"choice shares a slot", `<Observation xmlns="http://hl7.org/fhir"><status value="final"/><code><text value="t"/></code><valueString value="v"/><interpretation><text value="i"/></interpretation></Observation>`, nil},
		{"extension after value", `<Patient xmlns="http://hl7.org/fhir"><extension url="u"><valueString value="v"/><extension url="w"><valueString value="x"/></extension></extension></Patient>`,
			[]string{"Patient.extension[0].extension[0]"}},
		{"modifierExtension before extension", `<Patient xmlns="http://hl7.org/fhir"><modifierExtension url="m"><valueBoolean value="true"/></modifierExtension><extension url="u"><valueString value="v"/></extension></Patient>`,
			[]string{"Patient.extension[0]"}},
		{"id attribute has no order", `<Patient xmlns="http://hl7.org/fhir"><name id="n1"><family value="X"/></name></Patient>`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := ParseXML([]byte(tt.body), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, is := range CheckElementOrder(n) {
				got = append(got, is.Expression)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestXMLRejects(t *testing.T) {
	const ns = `xmlns="http://hl7.org/fhir"`
	tests := []struct{ name, body, want string }{
		{"DTD", `<?xml version="1.0"?><!DOCTYPE Patient><Patient ` + ns + `/>`, "DTD"},
		{"billion laughs", `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><Patient ` + ns + `><id value="&lol3;"/></Patient>`, "DTD"},
		{"external entity", `<?xml version="1.0"?><!DOCTYPE p [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><Patient ` + ns + `><id value="&xxe;"/></Patient>`, "DTD"},
		{"undeclared entity", `<Patient ` + ns + `><id value="&xxe;"/></Patient>`, "entity"},
		{"html entity in div", `<Patient ` + ns + `><text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml">a&nbsp;b</div></text></Patient>`, "entity"},
		{"processing instruction", `<?xml version="1.0"?><?xml-stylesheet href="x.xsl"?><Patient ` + ns + `/>`, "processing instruction"},
		{"PI inside", `<Patient ` + ns + `><?php echo 1?></Patient>`, "processing instruction"},
		{"PI in div", `<Patient ` + ns + `><text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><?x y?></div></text></Patient>`, "processing instruction"},
		{"latin-1 encoding", `<?xml version="1.0" encoding="ISO-8859-1"?><Patient ` + ns + `/>`, "encoding"},
		{"no namespace", `<Patient><id value="a"/></Patient>`, "FHIR namespace"},
		{"wrong namespace", `<Patient xmlns="http://hl7.org/fhir/v2"/>`, "FHIR namespace"},
		{"child in other namespace", `<Patient ` + ns + `><id xmlns="urn:x" value="a"/></Patient>`, "FHIR namespace"},
		{"div without xhtml namespace", `<Patient ` + ns + `><text><status value="generated"/><div>x</div></text></Patient>`, "XHTML namespace"},
		{"undeclared prefix", `<f:Patient/>`, "undeclared namespace prefix"},
		{"unknown element", `<Patient ` + ns + `><colour value="red"/></Patient>`, "unknown element <colour>"},
		{"unknown resource", `<Patients ` + ns + `/>`, "not a FHIR STU3 resource type"},
		{"abstract resource", `<DomainResource ` + ns + `/>`, "not a FHIR STU3 resource type"},
		{"two resources in a container", `<Bundle ` + ns + `><type value="message"/><entry><resource><Patient/><Patient/></resource></entry></Bundle>`, "more than one resource"},
		{"empty container", `<Bundle ` + ns + `><type value="message"/><entry><resource></resource></entry></Bundle>`, "holds no resource"},
		{"text content", `<Patient ` + ns + `><gender>male</gender></Patient>`, "text content"},
		{"unknown attribute", `<Patient ` + ns + `><gender value="male" colour="red"/></Patient>`, "attribute colour"},
		{"id as element in datatype", `<Patient ` + ns + `><name><id value="x"/></name></Patient>`, "must be an XML attribute"},
		{"url as element", `<Patient ` + ns + `><extension><url value="x"/></extension></Patient>`, "must be an XML attribute"},
		{"repeated single element", `<Patient ` + ns + `><gender value="male"/><gender value="female"/></Patient>`, "not a repeating element"},
		{"two choice alternatives", `<Observation ` + ns + `><valueString value="a"/><valueBoolean value="true"/></Observation>`, "not a repeating element"},
		{"empty primitive", `<Patient ` + ns + `><gender/></Patient>`, "neither a value"},
		{"bad boolean", `<Patient ` + ns + `><active value="yes"/></Patient>`, "not a valid boolean"},
		{"bad decimal", `<Observation ` + ns + `><valueQuantity><value value="1,5"/></valueQuantity></Observation>`, "not a valid decimal"},
		{"bad integer", `<Bundle ` + ns + `><total value="1.0"/></Bundle>`, "not a valid unsignedInt"},
		{"mismatched end", `<Patient ` + ns + `><name></family></Patient>`, "does not match"},
		{"mismatched end in div", `<Patient ` + ns + `><text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p></b></div></text></Patient>`, "does not match"},
		{"unclosed", `<Patient ` + ns + `><name>`, "not closed"},
		{"two roots", `<Patient ` + ns + `/><Patient ` + ns + `/>`, "after the root"},
		{"invalid UTF-8", "<Patient " + ns + "><gender value=\"\xff\"/></Patient>", "UTF-8"},
		{"NUL", "<Patient " + ns + "><gender value=\"a\x00\"/></Patient>", "NUL"},
		{"namespace flood", "<Patient " + ns + strings.Repeat(` xmlns:a="b"`, 100) + "/>", "namespace declarations"},
		{"end tag first", `</Patient>`, "unexpected end tag"},
		{"empty", ``, "no root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := ParseXML([]byte(tt.body), Limits{})
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("got %v, %v; want a *DecodeError", n, err)
			}
			if !strings.Contains(de.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", de.Error(), tt.want)
			}
		})
	}
}

func TestXMLErrorLocation(t *testing.T) {
	body := "<Bundle xmlns=\"http://hl7.org/fhir\">\n <type value=\"message\"/>\n <entry/>\n <entry>\n  <resource>\n   <Patient>\n    <name>\n     <colour value=\"x\"/>"
	_, err := ParseXML([]byte(body), Limits{})
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatal(err)
	}
	if de.Line != 8 || de.Col != 6 || de.Path != "Bundle.entry[1].resource.name[0].colour" {
		t.Fatalf("got line %d col %d path %q", de.Line, de.Col, de.Path)
	}
}

func TestXMLAccepts(t *testing.T) {
	body := "\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- comment -->\n" +
		`<f:Patient xmlns:f="http://hl7.org/fhir" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://hl7.org/fhir x.xsd">` +
		`<f:id value="p1"/><f:text><f:status value="generated"/><h:div xmlns:h="http://www.w3.org/1999/xhtml"><h:p>Tom &amp; Jerry</h:p></h:div></f:text>` +
		`<f:name id="n1"><f:given value="A&#10;B"><f:extension url="http://x"><f:valueString value="ext"/></f:extension></f:given><f:given value="C"/></f:name>` +
		`<f:birthDate><f:extension url="http://hl7.org/fhir/StructureDefinition/patient-birthTime"><f:valueDateTime value="2020-01-01T10:00:00Z"/></f:extension></f:birthDate>` +
		`<f:contained><f:Organization><f:name value="Org"/></f:Organization></f:contained></f:Patient>`
	n, err := ParseXML([]byte(body), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if n.ResourceType != "Patient" || n.Str("id") != "p1" {
		t.Fatalf("root %+v", n)
	}
	if got := n.Get("text", "div").XHTML; got != `<h:div xmlns:h="http://www.w3.org/1999/xhtml"><h:p>Tom &amp; Jerry</h:p></h:div>` {
		t.Fatalf("div %q", got)
	}
	name := n.Child("name")
	if name.Str("id") != "n1" || name.Children[0].Name != "id" {
		t.Fatalf("element id: %+v", name.Children[0])
	}
	if g := name.ChildrenNamed("given"); len(g) != 2 || g[0].Value != "A\nB" || g[0].Extension("http://x").Str("valueString") != "ext" {
		t.Fatalf("given: %+v", g)
	}
	if bd := n.Child("birthDate"); bd.HasValue || bd.Extension("http://hl7.org/fhir/StructureDefinition/patient-birthTime") == nil {
		t.Fatalf("birthDate: %+v", bd)
	}
	if org := n.Child("contained").Resource(); org == nil || org.ResourceType != "Organization" || org.Str("name") != "Org" {
		t.Fatalf("contained: %+v", n.Child("contained"))
	}
	if n.Child("name").Line != 3 || n.Child("name").Col < 100 {
		t.Fatalf("position %d:%d", n.Child("name").Line, n.Child("name").Col)
	}
	js, err := MarshalJSON(n)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"given":["A\nB","C"],"_given":[{"extension":[{"url":"http://x","valueString":"ext"}]},null]`,
		`"_birthDate":{"extension":[`,
		`"name":[{"id":"n1",`,
		`"contained":[{"resourceType":"Organization","name":"Org"}]`,
	} {
		if !strings.Contains(string(js), want) {
			t.Errorf("JSON lacks %s:\n%s", want, js)
		}
	}
}

func TestJSONRejects(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"not an object", `[]`, "must be an object"},
		{"no resourceType", `{"id":"a"}`, "no resourceType"},
		{"unknown resourceType", `{"resourceType":"Patients"}`, "not a FHIR STU3 resource type"},
		{"duplicate key", `{"resourceType":"Patient","gender":"male","gender":"female"}`, "duplicate property"},
		{"duplicate resourceType", `{"resourceType":"Patient","resourceType":"Patient"}`, "duplicate property resourceType"},
		{"duplicate _key", `{"resourceType":"Patient","_gender":{"id":"a"},"_gender":{"id":"b"}}`, "duplicate property"},
		{"two choice alternatives", `{"resourceType":"Observation","valueString":"a","valueBoolean":true}`, "alternatives of one choice"},
		{"unknown property", `{"resourceType":"Patient","colour":"red"}`, `unknown property "colour"`},
		{"fhir_comments", `{"resourceType":"Patient","fhir_comments":["x"]}`, "unknown property"},
		{"array for single", `{"resourceType":"Patient","gender":["male"]}`, "not a repeating element"},
		{"single for array", `{"resourceType":"Patient","name":{"family":"X"}}`, "must be an array"},
		{"empty array", `{"resourceType":"Patient","name":[]}`, "empty arrays"},
		{"number for string", `{"resourceType":"Patient","gender":1}`, "must be a JSON string"},
		{"string for boolean", `{"resourceType":"Patient","active":"true"}`, "must be a JSON boolean"},
		{"string for decimal", `{"resourceType":"Observation","valueQuantity":{"value":"1.5"}}`, "must be a JSON number"},
		{"fraction for integer", `{"resourceType":"Bundle","total":1.0}`, "not a valid unsignedInt"},
		{"bad number", `{"resourceType":"Observation","valueQuantity":{"value":01}}`, "invalid JSON number"},
		{"null single", `{"resourceType":"Patient","gender":null}`, "null is not allowed"},
		{"null without extension", `{"resourceType":"Patient","name":[{"given":["a",null]}]}`, "neither a value nor extensions"},
		{"_ arrays differ in length", `{"resourceType":"Patient","name":[{"given":["a","b"],"_given":[null]}]}`, "different lengths"},
		{"_ on complex", `{"resourceType":"Patient","_name":[{}]}`, "only primitive elements"},
		{"_ on attribute", `{"resourceType":"Patient","extension":[{"url":"u","_url":{"id":"x"}}]}`, "only primitive elements"},
		{"invalid UTF-8", "{\"resourceType\":\"Patient\",\"gender\":\"\xc3\x28\"}", "UTF-8"},
		{"NUL", "{\"resourceType\":\"Patient\",\"gender\":\"a\x00\"}", "NUL"},
		{"escaped NUL", `{"resourceType":"Patient","gender":"a\u0000"}`, "NUL"},
		{"control char not in XML", `{"resourceType":"Patient","gender":"a\b"}`, "not allowed in FHIR strings"},
		{"U+FFFF raw", "{\"resourceType\":\"Patient\",\"gender\":\"a\uffff\"}", "not allowed in FHIR strings"},
		{"U+FFFE escaped", `{"resourceType":"Patient","gender":"\ufffe"}`, "not allowed in FHIR strings"},
		{"lone surrogate", `{"resourceType":"Patient","gender":"\ud800"}`, "surrogate"},
		{"raw control char", "{\"resourceType\":\"Patient\",\"gender\":\"a\tb\"}", "control character"},
		{"trailing garbage", `{"resourceType":"Patient"} x`, "content after"},
		{"trailing comma", `{"resourceType":"Patient","gender":"male",}`, "expected a property name"},
		{"unterminated", `{"resourceType":"Patient","gender":"male`, "unterminated"},
		{"two resources", `{"resourceType":"Patient"}{"resourceType":"Patient"}`, "content after"},
		{"div not xhtml", `{"resourceType":"Patient","text":{"status":"generated","div":"<div>x</div>"}}`, "XHTML namespace"},
		{"div injection", `{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div><evil/>"}}`, "after the div"},
		{"div unbalanced", `{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><p></div>"}}`, "does not match"},
		{"div entity", `{"resourceType":"Patient","text":{"status":"generated","div":"<!DOCTYPE x><div xmlns=\"http://www.w3.org/1999/xhtml\"/>"}}`, "DTD"},
		{"resource in container without type", `{"resourceType":"Bundle","entry":[{"resource":{"id":"a"}}]}`, "no resourceType"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := ParseJSON([]byte(tt.body), Limits{})
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("got %v, %v; want a *DecodeError", n, err)
			}
			if !strings.Contains(de.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", de.Error(), tt.want)
			}
		})
	}
}

func TestJSONPrimitiveExtensions(t *testing.T) {
	// "_given" before "given", with nulls on both sides, resourceType last,
	// properties out of schema order: the tree must still come out in
	// schema order with values and extensions paired by index.
	body := `{"name":[{"_given":[null,{"id":"g2","extension":[{"url":"http://x","valueBoolean":true}]},{"extension":[{"url":"http://y","valueString":"only ext"}]}],` +
		`"given":["A","B",null],"family":"F"}],"birthDate":"2001-02-03","_birthDate":{"extension":[{"valueDateTime":"2001-02-03T04:05:06+01:00","url":"http://t"}]},"id":"p","resourceType":"Patient"}`
	n, err := ParseJSON([]byte(body), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	name := n.Child("name")
	var order []string
	for _, c := range name.Children {
		order = append(order, c.Name)
	}
	if strings.Join(order, ",") != "family,given,given,given" {
		t.Fatalf("name children order %v", order)
	}
	g := name.ChildrenNamed("given")
	if g[0].Value != "A" || len(g[0].Children) != 0 || g[1].Value != "B" || g[1].Str("id") != "g2" ||
		g[1].Extension("http://x").Str("valueBoolean") != "true" || g[2].HasValue || g[2].Extension("http://y") == nil {
		t.Fatalf("given nodes: %+v %+v %+v", g[0], g[1], g[2])
	}
	ext := n.Child("birthDate").Children[0]
	if ext.Children[0].Name != "url" || ext.Children[1].Name != "valueDateTime" {
		t.Fatalf("url must sort first: %+v", ext.Children)
	}
	if n.Children[0].Name != "id" {
		t.Fatalf("id must be first: %v", n.Children[0].Name)
	}
	out, err := MarshalJSON(n)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"resourceType":"Patient","id":"p","name":[{"family":"F","given":["A","B",null],"_given":[null,{"id":"g2","extension":[{"url":"http://x","valueBoolean":true}]},{"extension":[{"url":"http://y","valueString":"only ext"}]}]}],` +
		`"birthDate":"2001-02-03","_birthDate":{"extension":[{"url":"http://t","valueDateTime":"2001-02-03T04:05:06+01:00"}]}}`
	if string(out) != want {
		t.Fatalf("MarshalJSON:\n%s\nwant\n%s", out, want)
	}
	x, err := MarshalXML(n)
	if err != nil {
		t.Fatal(err)
	}
	wantX := `<given value="A"/><given id="g2" value="B"><extension url="http://x"><valueBoolean value="true"/></extension></given><given><extension url="http://y"><valueString value="only ext"/></extension></given>`
	if !strings.Contains(string(x), wantX) {
		t.Fatalf("MarshalXML:\n%s\nlacks\n%s", x, wantX)
	}
}

func TestNumbersKeptLexically(t *testing.T) {
	for _, v := range []string{"1.50", "0.000", "-0", "123456789012345678901234567890.123456789012345678901234567890", "1e400", "-2.5E-10"} {
		body := `{"resourceType":"Observation","status":"final","code":{"text":"t"},"valueQuantity":{"value":` + v + `}}`
		n, err := ParseJSON([]byte(body), Limits{})
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		if got := n.Str("valueQuantity", "value"); got != v {
			t.Fatalf("value %q, want %q", got, v)
		}
		out, _ := MarshalJSON(n)
		if string(out) != body {
			t.Fatalf("JSON %s, want %s", out, body)
		}
		x, _ := MarshalXML(n)
		if !strings.Contains(string(x), `<value value="`+v+`"/>`) {
			t.Fatalf("XML %s lacks %s", x, v)
		}
	}
	// Integers keep their text too, beyond int64.
	body := `{"resourceType":"Bundle","type":"message","total":99999999999999999999999}`
	n, err := ParseJSON([]byte(body), Limits{})
	if err != nil || n.Str("total") != "99999999999999999999999" {
		t.Fatalf("%v %v", n, err)
	}
}

func TestLimits(t *testing.T) {
	const ns = `xmlns="http://hl7.org/fhir"`
	deepXML := "<Patient " + ns + ">" + strings.Repeat(`<extension url="u">`, 100_000)
	deepJSON := `{"resourceType":"Patient","extension":[` + strings.Repeat(`{"url":"u","extension":[`, 100_000)
	deepArr := `{"resourceType":"Patient","x":` + strings.Repeat("[", 100_000)
	wide := "<Patient " + ns + ">" + strings.Repeat(`<extension url="u"><valueString value="v"/></extension>`, 200) + "</Patient>"
	wideJSON := `{"resourceType":"Patient","extension":[` + strings.Repeat(`{"url":"u"},`, 199) + `{"url":"u"}]}`
	long := `{"resourceType":"Patient","gender":"` + strings.Repeat("a", 2000) + `"}`
	tests := []struct {
		name string
		f    Format
		body string
		lim  Limits
		want string
	}{
		{"100k-deep XML", FormatXML, deepXML, Limits{}, "nested deeper than 64"},
		{"100k-deep JSON", FormatJSON, deepJSON, Limits{}, "nested deeper than 64"},
		{"100k-deep JSON arrays in skipped value", FormatJSON, `{"x":` + strings.Repeat("[", 100_000) + `,"resourceType":"Patient"}`, Limits{}, "nested deeper than 64"},
		{"deep arrays", FormatJSON, deepArr, Limits{}, "unknown property"},
		{"element count XML", FormatXML, wide, Limits{MaxElements: 100}, "more than 100 elements"},
		{"element count JSON", FormatJSON, wideJSON, Limits{MaxElements: 100}, "more than 100 elements"},
		{"array length XML", FormatXML, wide, Limits{MaxArrayLen: 50}, "more than 50 repetitions"},
		{"array length JSON", FormatJSON, wideJSON, Limits{MaxArrayLen: 50}, "more than 50 repetitions"},
		{"string length JSON", FormatJSON, long, Limits{MaxStringLen: 1000}, "longer than 1000"},
		{"string length XML", FormatXML, `<Patient ` + ns + `><gender value="` + strings.Repeat("a", 2000) + `"/></Patient>`, Limits{MaxStringLen: 1000}, "longer than 1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := []byte(tt.body)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err := Parse(body, tt.f, tt.lim)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			var de *DecodeError
			if !errors.As(err, &de) || !strings.Contains(de.Error(), tt.want) {
				t.Fatalf("got %v, want a DecodeError mentioning %q", err, tt.want)
			}
			// Failing fast: little work, and memory bounded by one copy of
			// the body (ParseJSON keeps values as substrings of one) plus
			// what was read before the limit.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(len(body))+1<<20 {
				t.Errorf("allocated %d bytes before failing", alloc)
			}
			if took > 200*time.Millisecond {
				t.Errorf("took %v", took)
			}
		})
	}
}

func TestSniffAndMediaTypes(t *testing.T) {
	sniff := []struct {
		in   string
		want Format
	}{
		{"<Bundle/>", FormatXML}, {"\xEF\xBB\xBF <x/>", FormatXML}, {" \r\n\t{}", FormatJSON}, {"", FormatUnknown}, {"x", FormatUnknown}, {"[{}]", FormatUnknown},
	}
	for _, tt := range sniff {
		if got := Sniff([]byte(tt.in)); got != tt.want {
			t.Errorf("Sniff(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	cts := []struct {
		in   string
		want Format
		ok   bool
	}{
		{"application/fhir+xml", FormatXML, true},
		{"application/xml+fhir; charset=UTF-8", FormatXML, true},
		{"application/xml", FormatXML, true},
		{"text/xml;charset=utf-8", FormatXML, true},
		{"application/fhir+json;charset=utf-8", FormatJSON, true},
		{"Application/JSON+FHIR", FormatJSON, true},
		{"application/json", FormatJSON, true},
		{"application/fhir+json; charset=iso-8859-1", FormatUnknown, false},
		{"text/plain", FormatUnknown, false},
		{"", FormatUnknown, false},
		{";;", FormatUnknown, false},
	}
	for _, tt := range cts {
		got, ok := FormatForContentType(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("FormatForContentType(%q) = %v,%v want %v,%v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	params := []struct {
		in   string
		want Format
		ok   bool
	}{
		{"xml", FormatXML, true}, {"JSON", FormatJSON, true}, {"application/fhir+json", FormatJSON, true},
		{"application/fhir+xml", FormatXML, true}, {"html", FormatUnknown, false},
		{"application/fhir json", FormatJSON, true}, // unescaped '+' in a query string
		{"text/xml", FormatXML, true},
	}
	for _, tt := range params {
		got, ok := FormatForParam(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("FormatForParam(%q) = %v,%v want %v,%v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestMarshalRejectsBadTrees(t *testing.T) {
	tests := []struct {
		name string
		n    *Node
		want string
	}{
		{"not a resource", &Node{Name: "x"}, "not a resource"},
		{"unknown element", &Node{Name: "Patient", ResourceType: "Patient", Children: []*Node{Prim("colour", "red")}}, `unknown element "colour"`},
		{"bad number", &Node{Name: "Bundle", ResourceType: "Bundle", Children: []*Node{Prim("total", "12abc")}}, "not a valid unsignedInt"},
		{"repeated single", &Node{Name: "Patient", ResourceType: "Patient", Children: []*Node{Prim("gender", "a"), Prim("gender", "b")}}, "not a repeating element"},
		{"empty container", &Node{Name: "Bundle", ResourceType: "Bundle", Children: []*Node{{Name: "entry", Children: []*Node{{Name: "resource"}}}}}, "exactly one resource"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errJ := MarshalJSON(tt.n)
			_, errX := MarshalXML(tt.n)
			for _, err := range []error{errJ, errX} {
				if tt.name == "repeated single" && err == errX {
					continue // XML can carry it; JSON cannot
				}
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("got %v, want %q", err, tt.want)
				}
			}
		})
	}
}

// TestGolden pins the exact JSON and XML output for one example, so that a
// change in formatting shows up in review.
func TestGolden(t *testing.T) {
	n, err := ParseXML(readFile(t, "testdata/examples/nems/PDS-Change-Of-GP-ems-example.xml"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []struct {
		file string
		f    Format
	}{{"testdata/golden/PDS-Change-Of-GP.json", FormatJSON}, {"testdata/golden/PDS-Change-Of-GP.xml", FormatXML}} {
		got, err := Marshal(n, g.f, true)
		if err != nil {
			t.Fatal(err)
		}
		if *update {
			if err := os.MkdirAll(filepath.Dir(g.file), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(g.file, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if want := readFile(t, g.file); !bytes.Equal(got, want) {
			t.Errorf("%s differs from output (run go test -run TestGolden -update)", g.file)
		}
	}
}
