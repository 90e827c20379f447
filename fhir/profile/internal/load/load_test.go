package load

import "testing"

func TestXMLAndJSONAgree(t *testing.T) {
	x, err := Bytes([]byte("\xef\xbb\xbf" + `<Patient xmlns="http://hl7.org/fhir"><id value="p1"/><extension url="u"><valueBoolean value="true"/></extension>
<text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p>hi</p></div></text><name><given value="A"/><given value="B"/></name></Patient>`))
	if err != nil {
		t.Fatal(err)
	}
	j, err := Bytes([]byte(`{"resourceType":"Patient","id":"p1","extension":[{"url":"u","valueBoolean":true}],
"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>hi</p></div>"},"name":[{"given":["A","B"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct {
		name string
		got  string
	}{
		{"xml id", x.Str("id")}, {"json id", j.Str("id")},
		{"xml url", x.Str("extension", "url")}, {"json url", j.Str("extension", "url")},
		{"xml bool", x.Str("extension", "valueBoolean")}, {"json bool", j.Str("extension", "valueBoolean")},
	} {
		if n.got == "" {
			t.Errorf("%s missing", n.name)
		}
	}
	if x.ResourceType != "Patient" || j.ResourceType != "Patient" {
		t.Fatal("resource type lost")
	}
	if len(x.Child("name").ChildrenNamed("given")) != 2 || len(j.Child("name").ChildrenNamed("given")) != 2 {
		t.Fatal("repeating element lost")
	}
	if x.Get("text", "div").XHTML == "" || j.Get("text", "div").XHTML == "" {
		t.Fatal("narrative lost")
	}
}

func TestBadInput(t *testing.T) {
	for _, in := range []string{"", "<a>", "{", "[1]"} {
		if _, err := Bytes([]byte(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}
