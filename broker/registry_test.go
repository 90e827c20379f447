package broker

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/ems-broker/ems/fhir"
)

func TestRegistryAuthorizer(t *testing.T) {
	auth := &RegistryAuthorizer{Grants: map[string]PublisherGrant{
		"200000000118": {ODS: "RA9", Events: []string{"vaccinations-1"}},
		"200000000306": {ODS: "X26", Events: []string{"pds-change-of-gp-1"}},
	}}
	h, stream := newTestHandler(t, func(o *Options) { o.Authorizer = auth })
	tests := []struct {
		name, asid, file string
		status           int
		code             string
	}{
		{"granted", "200000000118", "vaccinations-1-new.xml", 202, ""},
		{"no fromASID", "", "vaccinations-1-new.xml", 400, "MISSING_OR_INVALID_HEADER"},
		{"unknown ASID", "999999999999", "vaccinations-1-new.xml", 403, "ASID_CHECK_FAILED"},
		{"event not granted", "200000000118", "newborn-hearing-1-new.xml", 403, "ACCESS_DENIED"},
		{"PDS event by a publisher", "200000000118", "PDS-Change-Of-GP-ems-example.xml", 403, "ACCESS_DENIED"},
		{"PDS event by Spine", "200000000306", "PDS-Change-Of-GP-ems-example.xml", 202, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := xmlHeader()
			if tt.asid != "" {
				hdr.Set("fromASID", tt.asid)
			}
			rec := post(h, bytes.NewReader(readExample(t, tt.file)), hdr, "")
			if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.code) {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		})
	}
	// The accepted messages carry the publisher's ODS code.
	m, err := stream.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(fhir.HeaderPublisherODS); got != "RA9" {
		t.Fatalf("publisher ODS header %q", got)
	}
	info, _ := stream.Info(context.Background())
	if info.State.Msgs != 2 {
		t.Fatalf("stored %d, want 2", info.State.Msgs)
	}
}
