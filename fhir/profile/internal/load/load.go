// Package load reads FHIR conformance resources (and, for tests, instance
// documents) into the generic fhir.Node tree without any type knowledge:
// XML value/id/url attributes become a value or "id"/"url" children, JSON
// objects and arrays become children. It is enough for StructureDefinitions,
// ValueSets and CodeSystems, whose shape the compiler knows; it is not the
// service's parser (package fhir has that).
package load

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/ems-broker/ems/fhir"
)

// Bytes reads an XML or JSON FHIR resource, deciding by the first
// non-space byte.
func Bytes(data []byte) (*fhir.Node, error) {
	t := bytes.TrimLeft(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")), " \t\r\n")
	if len(t) > 0 && t[0] == '{' {
		return JSON(t)
	}
	return XML(t)
}

// XML reads a FHIR XML document. An element whose name starts with an upper
// case letter is a resource (FHIR element names never do).
func XML(data []byte) (*fhir.Node, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	var stack []*fhir.Node
	var root *fhir.Node
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if t.Name.Local == "div" && t.Name.Space == "http://www.w3.org/1999/xhtml" {
				raw, err := skipXHTML(d, t)
				if err != nil {
					return nil, err
				}
				n := &fhir.Node{Name: "div", XHTML: raw}
				if len(stack) > 0 {
					p := stack[len(stack)-1]
					p.Children = append(p.Children, n)
				}
				continue
			}
			line, col := d.InputPos()
			n := &fhir.Node{Name: t.Name.Local, Line: line, Col: col}
			if c := t.Name.Local[0]; c >= 'A' && c <= 'Z' {
				n.ResourceType = t.Name.Local
			}
			for _, a := range t.Attr {
				switch a.Name.Local {
				case "value":
					n.Value, n.HasValue = a.Value, true
				case "id", "url":
					n.Children = append(n.Children, &fhir.Node{Name: a.Name.Local, Value: a.Value, HasValue: true, Line: line, Col: col})
				}
			}
			if len(stack) > 0 {
				p := stack[len(stack)-1]
				p.Children = append(p.Children, n)
			} else {
				root = n
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		}
	}
	if root == nil {
		return nil, fmt.Errorf("reading XML: no root element")
	}
	return root, nil
}

// skipXHTML consumes a Narrative div and returns a rough re-serialisation,
// enough for the narrative checks (element and attribute names).
func skipXHTML(d *xml.Decoder, start xml.StartElement) (string, error) {
	var b strings.Builder
	depth := 0
	write := func(t xml.StartElement) {
		b.WriteString("<" + t.Name.Local)
		if depth == 0 {
			b.WriteString(` xmlns="http://www.w3.org/1999/xhtml"`)
		}
		for _, a := range t.Attr {
			if a.Name.Space == "xmlns" || a.Name.Local == "xmlns" {
				continue
			}
			b.WriteString(" " + a.Name.Local + `="`)
			xml.EscapeText(&b, []byte(a.Value))
			b.WriteString(`"`)
		}
		b.WriteString(">")
	}
	write(start)
	for {
		tok, err := d.Token()
		if err != nil {
			return "", fmt.Errorf("reading narrative: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			write(t)
		case xml.EndElement:
			b.WriteString("</" + t.Name.Local + ">")
			if depth == 0 {
				return b.String(), nil
			}
			depth--
		case xml.CharData:
			xml.EscapeText(&b, t)
		}
	}
}

// JSON reads a FHIR JSON document. Arrays become repeated children;
// "_name" primitive extensions are merged into the matching element.
func JSON(data []byte) (*fhir.Node, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("reading JSON: %w", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("reading JSON: root is not an object")
	}
	rt, _ := obj["resourceType"].(string)
	n := &fhir.Node{Name: rt, ResourceType: rt}
	fill(n, obj)
	return n, nil
}

// fill adds the properties of obj to n in a stable order: JSON object key
// order is lost by encoding/json, so keys are sorted, which is good enough
// for definitions (the compiler never relies on sibling order across names).
func fill(n *fhir.Node, obj map[string]any) {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		if k != "resourceType" && !strings.HasPrefix(k, "_") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		add(n, k, obj[k])
	}
}

func add(n *fhir.Node, name string, v any) {
	switch t := v.(type) {
	case []any:
		for _, e := range t {
			add(n, name, e)
		}
	case map[string]any:
		c := &fhir.Node{Name: name}
		if rt, ok := t["resourceType"].(string); ok {
			r := &fhir.Node{Name: rt, ResourceType: rt}
			fill(r, t)
			// contained and entry.resource hold the resource directly in
			// JSON; the tree keeps XML's container shape.
			c.Children = append(c.Children, r)
		} else {
			fill(c, t)
		}
		n.Children = append(n.Children, c)
	case string:
		if name == "div" {
			n.Children = append(n.Children, &fhir.Node{Name: name, XHTML: t})
			return
		}
		n.Children = append(n.Children, &fhir.Node{Name: name, Value: t, HasValue: true})
	case json.Number:
		n.Children = append(n.Children, &fhir.Node{Name: name, Value: t.String(), HasValue: true})
	case bool:
		s := "false"
		if t {
			s = "true"
		}
		n.Children = append(n.Children, &fhir.Node{Name: name, Value: s, HasValue: true})
	}
}
