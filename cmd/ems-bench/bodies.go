package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/ems-broker/ems/fhir"
)

// examples are the official example bundles the load is made of, one per
// event type the benchmark publishes; each names patient exampleNHS in its
// routing extension and Patient resource.
var examples = []struct{ file, event string }{
	{"PDS-Change-Of-GP-ems-example.xml", "pds-change-of-gp-1"},
	{"PDS-Change-Of-Address-ems-example.xml", "pds-change-of-address-1"},
	{"PDS-Record-Change.xml", "pds-record-change-1"},
	{"vaccinations-1-new.xml", "vaccinations-1"},
	{"newborn-hearing-1-new.xml", "newborn-hearing-1"},
	{"blood-spot-test-outcome-1-new.xml", "blood-spot-test-outcome-1"},
	{"nipe-outcome-1-new.xml", "nipe-outcome-1"},
	{"Professional-Contacts-1-new.xml", "professional-contacts-1"},
}

const exampleNHS = "9912003888"

// idMarker stands for MessageHeader.id in a template until a message is
// made from it.
const idMarker = "ffffffff-ffff-4fff-bfff-ffffffffffff"

// template is one example rendered in one format, cut where the
// MessageHeader.id and the NHS numbers go, so that making a message is a
// few appends rather than a parse and a marshal on the load generator's
// share of the two cores.
type template struct {
	event       string
	contentType string
	parts       [][]byte // text between the holes
	holes       []bool   // holes[i] after parts[i]: true = id, false = NHS number
}

// loadTemplates renders every example in XML and JSON.
func loadTemplates(dir string) ([]*template, error) {
	var out []*template
	for _, ex := range examples {
		raw, err := os.ReadFile(filepath.Join(dir, ex.file))
		if err != nil {
			return nil, fmt.Errorf("reading example: %w", err)
		}
		root, err := fhir.ParseXML(raw, fhir.DefaultLimits())
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", ex.file, err)
		}
		header := root.ChildrenNamed("entry")[0].Child("resource").Resource()
		if header == nil || header.Child("id") == nil {
			return nil, fmt.Errorf("%s: no MessageHeader.id", ex.file)
		}
		header.Child("id").Value = idMarker
		for _, f := range []fhir.Format{fhir.FormatXML, fhir.FormatJSON} {
			body, err := fhir.Marshal(root, f, false)
			if err != nil {
				return nil, fmt.Errorf("rendering %s: %w", ex.file, err)
			}
			t, err := cut(body, ex.event, f.ContentType())
			if err != nil {
				return nil, fmt.Errorf("%s: %w", ex.file, err)
			}
			out = append(out, t)
		}
	}
	return out, nil
}

func cut(body []byte, event, ct string) (*template, error) {
	t := &template{event: event, contentType: ct}
	ids := 0
	for len(body) > 0 {
		i, j := bytes.Index(body, []byte(idMarker)), bytes.Index(body, []byte(exampleNHS))
		switch {
		case i < 0 && j < 0:
			t.parts = append(t.parts, body)
			body = nil
		case j < 0 || (i >= 0 && i < j):
			t.parts, t.holes = append(t.parts, body[:i]), append(t.holes, true)
			body = body[i+len(idMarker):]
			ids++
		default:
			t.parts, t.holes = append(t.parts, body[:j]), append(t.holes, false)
			body = body[j+len(exampleNHS):]
		}
	}
	if ids != 1 || len(t.holes) < 2 {
		return nil, fmt.Errorf("template has %d ids and %d NHS numbers", ids, len(t.holes)-ids)
	}
	if len(t.parts) == len(t.holes) {
		t.parts = append(t.parts, nil)
	}
	return t, nil
}

// render appends the message for id and nhs to dst.
func (t *template) render(dst []byte, id, nhs string) []byte {
	for i, p := range t.parts {
		dst = append(dst, p...)
		if i < len(t.holes) {
			if t.holes[i] {
				dst = append(dst, id...)
			} else {
				dst = append(dst, nhs...)
			}
		}
	}
	return dst
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

// nhsNumber is the i-th of a deterministic sequence of distinct NHS numbers
// with valid Modulus 11 check digits: 9-digit stems step by two, and when a
// stem's check digit would be 10 (no valid number) the next stem is used,
// whose weighted sum differs by 2 mod 11 and so is always valid.
func nhsNumber(i int) string {
	stem := 400000000 + 2*i
	for {
		s := strconv.Itoa(stem)
		sum := 0
		for k := 0; k < 9; k++ {
			sum += int(s[k]-'0') * (10 - k)
		}
		check := 11 - sum%11
		if check == 11 {
			check = 0
		}
		if check != 10 {
			return s + strconv.Itoa(check)
		}
		stem++
	}
}

// ids makes unique MessageHeader ids (UUID v4 shape) that carry a
// per-run prefix and the message's sequence number, so a delivered copy
// can be traced back to its publish time without parsing the bundle.
type ids struct{ prefix string }

func newIDs() ids {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return ids{prefix: hex.EncodeToString(b[:])}
}

func (g ids) make(seq uint64) string {
	return fmt.Sprintf("%s-0000-4000-8000-%012x", g.prefix, seq)
}

// seqOf finds this run's id in a delivered body or header and returns its
// sequence number.
func (g ids) seqOf(b []byte) (uint64, bool) {
	i := bytes.Index(b, []byte(g.prefix+"-0000-4000-8000-"))
	if i < 0 || len(b) < i+36 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[i+24:i+36]), 16, 64)
	return v, err == nil
}
