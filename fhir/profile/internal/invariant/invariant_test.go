package invariant

import (
	"testing"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/profile/internal/load"
)

func node(t *testing.T, js string) *fhir.Node {
	t.Helper()
	n, err := load.JSON([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestInvariants(t *testing.T) {
	resolve := func(ref string) *fhir.Node {
		if ref == "urn:uuid:org" {
			return &fhir.Node{Name: "Organization", ResourceType: "Organization"}
		}
		return nil
	}
	for _, c := range []struct {
		key, js string
		ok      bool
	}{
		{"con-4", `{"abatementBoolean": true, "clinicalStatus": "active"}`, false},
		{"con-4", `{"abatementBoolean": true, "clinicalStatus": "resolved"}`, true},
		{"con-4", `{"abatementDateTime": "2017", "clinicalStatus": "active"}`, true},
		{"rng-2", `{"low": {"value": 5}, "high": {"value": 4.5}}`, false},
		{"rng-2", `{"low": {"value": 4}, "high": {"value": 4.5}}`, true},
		{"rat-1", `{"numerator": {"value": 1}}`, false},
		{"rat-1", `{"numerator": {"value": 1}, "denominator": {"value": 2}}`, true},
		{"tim-9", `{"offset": 10, "when": "C"}`, false},
		{"tim-9", `{"offset": 10, "when": "ACM"}`, true},
		{"age-1", `{"value": 0, "code": "a", "system": "http://unitsofmeasure.org"}`, false},
		{"age-1", `{"value": 3, "code": "a", "system": "http://unitsofmeasure.org"}`, true},
		{"drt-1", `{"value": 3, "code": "d", "system": "http://example.org"}`, false},
		{"obs-7", `{"valueString": "x", "code": {"text": "a"}, "component": [{"code": {"text": "a"}}]}`, false},
		{"obs-7", `{"valueString": "x", "code": {"text": "a"}, "component": [{"code": {"text": "b"}}]}`, true},
		{"ctm-1", `{"onBehalfOf": {"reference": "urn:uuid:org"}, "member": {"reference": "urn:uuid:org"}}`, false},
		{"ctm-1", `{"onBehalfOf": {"reference": "urn:uuid:org"}, "member": {"reference": "Practitioner/1"}}`, true},
		{"mps-1", `{"onBehalfOf": {"reference": "x"}, "agent": {"reference": "Patient/1"}}`, false},
		{"mps-1", `{"onBehalfOf": {"reference": "x"}, "agent": {"reference": "urn:uuid:unknown"}}`, true},
		{"inv-1", `{"authoredOn": "2017-02-14T15:00:00Z", "lastModified": "2017-02-13T15:00:00Z"}`, false},
		{"fhs-1", `{"ageAge": {"value": 3}, "bornDate": "2000"}`, false},
		{"per-1", `{"start": "2017-02-14", "end": "2017-02"}`, true},
		{"bdl-7", `{"entry": [{"fullUrl": "urn:uuid:a"}, {"fullUrl": "urn:uuid:a"}]}`, false},
		{"bdl-7", `{"entry": [{"fullUrl": "urn:uuid:a"}, {"fullUrl": "urn:uuid:b"}, {"request": {"url": "x"}}, {"request": {"url": "x"}}]}`, true},
		{"bdl-7", `{"entry": [{"fullUrl": "a", "resource": {"resourceType": "Patient", "meta": {"versionId": "1"}}}, {"fullUrl": "a", "resource": {"resourceType": "Patient", "meta": {"versionId": "2"}}}]}`, true},
		{"bdl-7", `{"entry": [{"fullUrl": "a", "resource": {"resourceType": "Patient", "meta": {"versionId": "1"}}}, {"fullUrl": "b"}, {"fullUrl": "a", "resource": {"resourceType": "Patient", "meta": {"versionId": "1"}}}]}`, false},
		{"bdl-7", `{"entry": [{"fullUrl": "a\u0000", "resource": {"resourceType": "Patient", "meta": {"versionId": "b"}}}, {"fullUrl": "a", "resource": {"resourceType": "Patient", "meta": {"versionId": "\u0000b"}}}]}`, false},
		{"dom-1", `{"contained": [{"resourceType": "Patient", "text": {"status": "generated"}}]}`, false},
		{"dom-2", `{"contained": [{"resourceType": "Patient", "contained": [{"resourceType": "Patient"}]}]}`, false},
		{"dom-4", `{"contained": [{"resourceType": "Patient", "meta": {"versionId": "1"}}]}`, false},
		{"cnt-3", `{"value": 1.5, "code": "1", "system": "http://unitsofmeasure.org"}`, false},
		{"mny-1", `{"value": 1, "code": "GBP", "system": "urn:iso:std:iso:4217"}`, true},
		{"sqty-1", `{"value": 1, "comparator": "<"}`, false},
	} {
		n := node(t, `{"resourceType": "X", "x": `+c.js+`}`).Child("x")
		env := &Env{Resource: n, Resolve: resolve}
		if got := Check(c.key, n, env); got != c.ok {
			t.Errorf("%s on %s = %v, want %v", c.key, c.js, got, c.ok)
		}
	}
}

func TestSupportedNeedsExactExpression(t *testing.T) {
	if !Supported("per-1", "start.empty()  or end.empty() or (start <= end)") {
		t.Error("whitespace must not matter")
	}
	if Supported("per-1", "start.empty() or end.empty()") {
		t.Error("a changed expression must not be supported")
	}
	if Supported("zzz-1", "true") {
		t.Error("unknown key supported")
	}
}
