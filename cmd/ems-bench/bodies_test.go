package main

import (
	"bytes"
	"testing"

	"github.com/ems-broker/ems/fhir"
)

func TestNHSNumbersValidAndDistinct(t *testing.T) {
	seen := map[string]bool{}
	for i := range 20_000 {
		n := nhsNumber(i)
		if p := fhir.NHSNumberProblem(n); p != "" {
			t.Fatalf("nhsNumber(%d) = %s: %s", i, n, p)
		}
		if seen[n] {
			t.Fatalf("nhsNumber(%d) = %s repeats", i, n)
		}
		seen[n] = true
	}
}

func TestTemplatesRenderParsableBundles(t *testing.T) {
	tmpls, err := loadTemplates("../../testdata/nems-examples")
	if err != nil {
		t.Fatal(err)
	}
	if len(tmpls) != 2*len(examples) {
		t.Fatalf("%d templates", len(tmpls))
	}
	g := newIDs()
	for _, tm := range tmpls {
		id, nhs := g.make(42), nhsNumber(7)
		body := tm.render(nil, id, nhs)
		f, _ := fhir.FormatForContentType(tm.contentType)
		root, err := fhir.Parse(body, f, fhir.DefaultLimits())
		if err != nil {
			t.Fatalf("%s %s: %v", tm.event, tm.contentType, err)
		}
		if got := root.ChildrenNamed("entry")[0].Child("resource").Resource().Str("id"); got != id {
			t.Errorf("%s %s: MessageHeader.id %q", tm.event, tm.contentType, got)
		}
		if bytes.Contains(body, []byte(exampleNHS)) || !bytes.Contains(body, []byte(nhs)) {
			t.Errorf("%s %s: NHS number not replaced", tm.event, tm.contentType)
		}
		if seq, ok := g.seqOf(body); !ok || seq != 42 {
			t.Errorf("%s: seqOf = %d %v", tm.event, seq, ok)
		}
	}
}
