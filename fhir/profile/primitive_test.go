package profile

import (
	"strconv"
	"testing"
)

func TestPrimitiveFormats(t *testing.T) {
	for _, c := range []struct {
		typ, v string
		ok     bool
	}{
		{"boolean", "true", true}, {"boolean", "True", false},
		{"integer", "-12", true}, {"integer", "012", false}, {"integer", "2147483648", false},
		{"positiveInt", "1", true}, {"positiveInt", "0", false}, {"unsignedInt", "0", true}, {"unsignedInt", "-1", false},
		{"decimal", "0.50", true}, {"decimal", "-1.5e-3", true}, {"decimal", ".5", false}, {"decimal", "1.", false}, {"decimal", "00.1", false},
		{"date", "2017", true}, {"date", "2017-02", true}, {"date", "2016-02-29", true}, {"date", "2017-02-29", false}, {"date", "2017-02-14T10:00:00Z", false},
		{"dateTime", "2017-02-14T15:00:00+00:00", true}, {"dateTime", "2017-02-14T15:00:00", false}, {"dateTime", "2017-11-01T16:02:04+58:00", false},
		{"dateTime", "2017-02-14T15:00:00-14:00", true}, {"dateTime", "2017-02-14T15:00:00+14:30", false}, {"dateTime", "14/02/2017", false},
		{"instant", "2017-02-14T15:00:00.123Z", true}, {"instant", "2017-02-14", false},
		{"time", "23:59:59", true}, {"time", "24:00:00", false}, {"time", "10:00", false}, {"time", "10:00:00.5", true},
		{"uri", "urn:uuid:1", true}, {"uri", "a b", false},
		{"id", "a-B.9", true}, {"id", "a_b", false},
		{"code", "a b", true}, {"code", "a  b", false}, {"code", " a", false},
		{"oid", "urn:oid:2.16.840.1", true}, {"oid", "urn:oid:3.1", false}, {"oid", "2.16", false},
		{"uuid", "urn:uuid:c757873d-ec9a-4326-a141-556f43239520", true}, {"uuid", "urn:uuid:C757873D-EC9A-4326-A141-556F43239520", false},
		{"base64Binary", "aGVsbG8=", true}, {"base64Binary", "@@", false},
		{"string", "x", true}, {"string", " ", false}, {"string", "", false},
	} {
		got := primitiveProblem(c.typ, c.v)
		if (got == "") != c.ok {
			t.Errorf("%s %q: problem %q, want ok=%v", c.typ, c.v, got, c.ok)
		}
	}
}

// FuzzPrimitive checks the lexical checkers never panic and that whatever
// they accept as a decimal or integer Go can parse as a number.
func FuzzPrimitive(f *testing.F) {
	for _, s := range []string{"1", "-0.5e3", "2017-02-14T15:00:00+00:00", "urn:oid:1.2", "aGk=", "23:00:00"} {
		f.Add(s)
	}
	types := []string{"boolean", "integer", "positiveInt", "unsignedInt", "decimal", "date", "dateTime", "instant", "time", "uri", "id", "code", "oid", "uuid", "base64Binary", "string"}
	f.Fuzz(func(t *testing.T, v string) {
		for _, typ := range types {
			p := primitiveProblem(typ, v)
			if p == "" && typ == "decimal" {
				if _, ok := parseDecimal(v); !ok {
					t.Fatalf("accepted decimal %q that does not parse", v)
				}
			}
		}
	})
}

// parseDecimal cross-checks isDecimal.
func parseDecimal(v string) (float64, bool) {
	f, err := strconv.ParseFloat(v, 64)
	if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
		return f, true // out of float64 range is still a valid FHIR decimal
	}
	return f, err == nil
}

func TestSCTID(t *testing.T) {
	for code, ok := range map[string]bool{
		"170433008": true, "34925411000001109": true, "1085451000000103": true, "413083006": true,
		"86637100000010": true, "17043300": false, "170433038": false, "0170433008": false, "12345": false, "1704330a8": false,
	} {
		if got := validSCTID(code); got != ok {
			t.Errorf("validSCTID(%s) = %v, want %v", code, got, ok)
		}
	}
}
