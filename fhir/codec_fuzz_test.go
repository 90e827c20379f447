package fhir

import (
	"bytes"
	"os"
	"testing"
)

// seedCorpus adds the example messages and their JSON forms, plus a few
// hostile shapes, to a fuzz target's corpus.
func seedCorpus(f *testing.F, format Format) {
	for _, p := range exampleFiles(f) {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if format == FormatXML {
			f.Add(data)
			continue
		}
		if n, err := ParseXML(data, Limits{}); err == nil {
			SortElements(n)
			if js, err := MarshalJSON(n); err == nil {
				f.Add(js)
			}
		}
	}
	for _, s := range []string{
		`<Patient xmlns="http://hl7.org/fhir"><name><given value="a"><extension url="u"><valueString value="x"/></extension></given></name></Patient>`,
		`<!DOCTYPE x [<!ENTITY a "b">]><Patient xmlns="http://hl7.org/fhir"/>`,
		`{"resourceType":"Patient","name":[{"given":["a",null],"_given":[null,{"id":"x"}]}]}`,
		`{"resourceType":"Observation","valueQuantity":{"value":1e400}}`,
		`{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}}`,
	} {
		f.Add([]byte(s))
	}
}

// roundTrip checks the property both fuzz targets share: a tree that
// parsed converts through the other format and back to an equal tree.
func roundTrip(t *testing.T, n *Node) {
	SortElements(n)
	js, err := MarshalJSON(n)
	if err != nil {
		t.Fatalf("MarshalJSON of a parsed tree: %v", err)
	}
	fromJSON, err := ParseJSON(js, Limits{})
	if err != nil {
		t.Fatalf("ParseJSON of MarshalJSON output: %v\n%s", err, js)
	}
	if d := diffTrees(n, fromJSON, n.Name); d != "" {
		t.Fatalf("JSON round trip differs: %s\n%s", d, js)
	}
	x, err := MarshalXML(n)
	if err != nil {
		t.Fatalf("MarshalXML of a parsed tree: %v", err)
	}
	fromXML, err := ParseXML(x, Limits{})
	if err != nil {
		t.Fatalf("ParseXML of MarshalXML output: %v\n%s", err, x)
	}
	if d := diffTrees(n, fromXML, n.Name); d != "" {
		t.Fatalf("XML round trip differs: %s\n%s", d, x)
	}
	x2, err := MarshalXML(fromJSON)
	if err != nil || !bytes.Equal(x, x2) {
		t.Fatalf("XML from JSON differs: %v", err)
	}
}

func FuzzParseXML(f *testing.F) {
	seedCorpus(f, FormatXML)
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := ParseXML(data, Limits{})
		if err != nil {
			if _, ok := err.(*DecodeError); !ok {
				t.Fatalf("error is %T, want *DecodeError: %v", err, err)
			}
			return
		}
		CheckElementOrder(n)
		roundTrip(t, n)
	})
}

func FuzzParseJSON(f *testing.F) {
	seedCorpus(f, FormatJSON)
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := ParseJSON(data, Limits{})
		if err != nil {
			if _, ok := err.(*DecodeError); !ok {
				t.Fatalf("error is %T, want *DecodeError: %v", err, err)
			}
			return
		}
		if issues := CheckElementOrder(n); len(issues) > 0 {
			t.Fatalf("ParseJSON produced an out-of-order tree: %v", issues[0])
		}
		roundTrip(t, n)
	})
}
