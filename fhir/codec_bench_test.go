package fhir

import (
	"bytes"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// benchCorpus is every valid example message in both formats: event
// messages are what the broker parses on its hot path.
type benchCorpus struct {
	xml, json [][]byte
	trees     []*Node
	xmlBytes  int64
	jsonBytes int64
}

func loadBenchCorpus(b *testing.B) *benchCorpus {
	b.Helper()
	c := &benchCorpus{}
	for _, p := range exampleFiles(b) {
		if _, bad := knownInvalid[strings.TrimPrefix(filepath.ToSlash(p), "testdata/examples/")]; bad {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		n, err := ParseXML(data, Limits{})
		if err != nil {
			b.Fatal(err)
		}
		SortElements(n)
		js, err := MarshalJSON(n)
		if err != nil {
			b.Fatal(err)
		}
		c.xml, c.json, c.trees = append(c.xml, data), append(c.json, js), append(c.trees, n)
		c.xmlBytes += int64(len(data))
		c.jsonBytes += int64(len(js))
	}
	return c
}

func BenchmarkParseXML(b *testing.B) {
	c := loadBenchCorpus(b)
	b.SetBytes(c.xmlBytes)
	b.ReportAllocs()
	for b.Loop() {
		for _, d := range c.xml {
			if _, err := ParseXML(d, Limits{}); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkParseJSON(b *testing.B) {
	c := loadBenchCorpus(b)
	b.SetBytes(c.jsonBytes)
	b.ReportAllocs()
	for b.Loop() {
		for _, d := range c.json {
			if _, err := ParseJSON(d, Limits{}); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkMarshalXML(b *testing.B) {
	c := loadBenchCorpus(b)
	b.SetBytes(c.xmlBytes)
	b.ReportAllocs()
	for b.Loop() {
		for _, n := range c.trees {
			if _, err := MarshalXML(n); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkMarshalJSON(b *testing.B) {
	c := loadBenchCorpus(b)
	b.SetBytes(c.jsonBytes)
	b.ReportAllocs()
	for b.Loop() {
		for _, n := range c.trees {
			if _, err := MarshalJSON(n); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkRawTokenWalk is the floor ParseXML is measured against: the
// bare encoding/xml RawToken loop over the same corpus, building nothing.
func BenchmarkRawTokenWalk(b *testing.B) {
	c := loadBenchCorpus(b)
	b.SetBytes(c.xmlBytes)
	b.ReportAllocs()
	for b.Loop() {
		for _, d := range c.xml {
			dec := xml.NewDecoder(bytes.NewReader(d))
			for {
				if _, err := dec.RawToken(); err == io.EOF {
					break
				} else if err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

func BenchmarkCheckElementOrder(b *testing.B) {
	c := loadBenchCorpus(b)
	b.SetBytes(c.xmlBytes)
	b.ReportAllocs()
	for b.Loop() {
		for _, n := range c.trees {
			CheckElementOrder(n)
		}
	}
}
