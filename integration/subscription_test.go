package integration

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// registryConfig registers two subscriber organisations with their
// mailboxes, as a deployment would.
const registryConfig = `registry:
  asids:
    "200000000115":
      ods: SUB01
      mailboxes: [SUB01_200000000115, SUB01_MAILBOX2]
    "200000000116":
      ods: SUB02
      mailboxes: [SUB02_200000000116]
`

// riSubscription is the NEMS reference implementation's create body, without
// the id it wrongly carries (nems-ri-examples/INDEX.md).
func riSubscription(t *testing.T) string {
	t.Helper()
	s := string(fixture(t, "nems-ri-examples/subscription-patient-9912003888.xml"))
	i := strings.Index(s, "<id value=")
	j := strings.Index(s[i:], "/>")
	return s[:i] + s[i+j+2:]
}

func genericJSON(ods, mailbox, criteria string) string {
	b, _ := json.Marshal(map[string]any{
		"resourceType": "Subscription",
		"meta":         map[string]any{"profile": []string{"https://fhir.nhs.uk/STU3/StructureDefinition/EMS-Subscription-1"}},
		"status":       "requested",
		"contact":      []any{map[string]any{"system": "url", "value": "https://directory.spineservices.nhs.uk/STU3/Organization/" + ods, "use": "work"}},
		"reason":       "integration test",
		"criteria":     criteria,
		"channel":      map[string]any{"type": "message", "endpoint": mailbox},
	})
	return string(b)
}

func (e *emsd) request(t *testing.T, method, path, body string, headers map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.baseURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, b := do(t, req)
	return resp, string(b)
}

func TestSubscriptionAPIEndToEnd(t *testing.T) {
	e := startEMSD(t, t.TempDir(), registryConfig)
	sub01 := map[string]string{"fromASID": "200000000115"}
	sub02 := map[string]string{"fromASID": "200000000116"}
	with := func(h map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range h {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}

	// Create as an NHS subscriber script does: XML with no Content-Type.
	resp, body := e.request(t, http.MethodPost, "/STU3/Subscription", riSubscription(t), sub01)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	i := strings.Index(loc, "STU3/Subscription/")
	if i < 0 || resp.Header.Get("ETag") == "" || resp.Header.Get("Last-Modified") == "" {
		t.Fatalf("create headers: %v", resp.Header)
	}
	id := strings.SplitN(loc[i+len("STU3/Subscription/"):], "/", 2)[0]

	// Readable at once, in XML by default and JSON on request.
	resp, body = e.request(t, http.MethodGet, "/STU3/Subscription/"+id, "", sub01)
	if resp.StatusCode != 200 || !strings.Contains(body, `<id value="`+id+`"`) || !strings.Contains(body, "versionId") {
		t.Fatalf("read: %d %s", resp.StatusCode, body)
	}
	resp, body = e.request(t, http.MethodGet, "/STU3/Subscription/"+id+"?_format=json", "", sub01)
	if resp.StatusCode != 200 || !strings.Contains(body, `"resourceType"`) {
		t.Fatalf("read json: %d %s", resp.StatusCode, body)
	}

	// Create in JSON, a generic subscription with a tag.
	generic := "/Bundle?type=message&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=COUNTRYCODE&Organization.identifier=E92000001&tag=leeds-hv"
	resp, body = e.request(t, http.MethodPost, "/STU3/Subscription", genericJSON("SUB01", "SUB01_MAILBOX2", generic),
		with(sub01, "Content-Type", "application/fhir+json", "Accept", "application/fhir+json"))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create generic: %d %s", resp.StatusCode, body)
	}

	// A duplicate is rejected and names the existing subscription.
	resp, body = e.request(t, http.MethodPost, "/STU3/Subscription", riSubscription(t), sub01)
	if resp.StatusCode != 422 && resp.StatusCode != 409 || !strings.Contains(body, "DUPLICATE_REJECTED") || !strings.Contains(body, id) {
		t.Fatalf("duplicate: %d %s", resp.StatusCode, body)
	}

	// Another organisation can neither read, update, delete nor find it.
	for _, m := range []string{http.MethodGet, http.MethodDelete} {
		resp, body = e.request(t, m, "/STU3/Subscription/"+id, "", sub02)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "ACCESS_DENIED") {
			t.Fatalf("%s by another org: %d %s", m, resp.StatusCode, body)
		}
	}
	resp, body = e.request(t, http.MethodGet, "/STU3/Subscription?status=active", "", sub02)
	if resp.StatusCode != 200 || strings.Contains(body, id) {
		t.Fatalf("search by another org: %d %s", resp.StatusCode, body)
	}
	// Nor create one in someone else's name or mailbox.
	resp, body = e.request(t, http.MethodPost, "/STU3/Subscription", genericJSON("SUB01", "SUB01_MAILBOX2", generic+"x"), with(sub02, "Content-Type", "application/fhir+json"))
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("create for another org: %d %s", resp.StatusCode, body)
	}
	resp, body = e.request(t, http.MethodPost, "/STU3/Subscription", genericJSON("SUB02", "SUB01_MAILBOX2", generic+"y"), with(sub02, "Content-Type", "application/fhir+json"))
	if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("create into another org's mailbox: %d %s", resp.StatusCode, body)
	}
	// An unknown caller is refused.
	resp, body = e.request(t, http.MethodGet, "/STU3/Subscription/"+id, "", map[string]string{"fromASID": "999999999999"})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "ASID_CHECK_FAILED") {
		t.Fatalf("unknown ASID: %d %s", resp.StatusCode, body)
	}

	// The owner finds both by search.
	resp, body = e.request(t, http.MethodGet, "/STU3/Subscription?_format=json", "", sub01)
	if resp.StatusCode != 200 || !strings.Contains(body, id) || !strings.Contains(body, `"searchset"`) {
		t.Fatalf("search: %d %s", resp.StatusCode, body)
	}

	// Update with If-Match: a stale version is 412, the current one works.
	resp, body = e.request(t, http.MethodGet, "/STU3/Subscription/"+id, "", sub01)
	etag := resp.Header.Get("ETag")
	update := strings.Replace(riSubscription(t), "<meta>", `<id value="`+id+`"/><meta>`, 1)
	update = strings.Replace(update, "Patient.age=lt19", "Patient.age=lt18", 1)
	update = strings.Replace(update, `<status value="requested"/>`, `<status value="active"/>`, 1)
	resp, body = e.request(t, http.MethodPut, "/STU3/Subscription/"+id, update, with(sub01, "If-Match", `W/"999"`, "Content-Type", "application/fhir+xml"))
	if resp.StatusCode != http.StatusPreconditionFailed {
		t.Fatalf("stale update: %d %s", resp.StatusCode, body)
	}
	resp, body = e.request(t, http.MethodPut, "/STU3/Subscription/"+id, update, with(sub01, "If-Match", etag, "Content-Type", "application/fhir+xml"))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == etag {
		t.Fatalf("update: %d %s (etag %s → %s)", resp.StatusCode, body, etag, resp.Header.Get("ETag"))
	}

	// Bad criteria get INVALID_PARAMETER naming the component.
	bad := genericJSON("SUB01", "SUB01_MAILBOX2", "/Bundle?type=message&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=COUNTRYCODE&Organization.identifier=E92000001&tag=has space")
	resp, body = e.request(t, http.MethodPost, "/STU3/Subscription", bad, with(sub01, "Content-Type", "application/fhir+json"))
	if resp.StatusCode != 422 || !strings.Contains(body, "INVALID_PARAMETER") || !strings.Contains(body, "tag") {
		t.Fatalf("bad tag: %d %s", resp.StatusCode, body)
	}

	// Delete, then it is gone; and it survives nothing across a restart.
	resp, body = e.request(t, http.MethodDelete, "/STU3/Subscription/"+id, "", sub01)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("delete: %d %s", resp.StatusCode, body)
	}
	e.stop()
	e.start()
	resp, body = e.request(t, http.MethodGet, "/STU3/Subscription/"+id, "", sub01)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "NO_RECORD_FOUND") {
		t.Fatalf("read after delete and restart: %d %s", resp.StatusCode, body)
	}
	resp, body = e.request(t, http.MethodGet, "/STU3/Subscription?_format=json", "", sub01)
	if resp.StatusCode != 200 || !strings.Contains(body, "leeds-hv") {
		t.Fatalf("generic subscription lost across restart: %d %s", resp.StatusCode, body)
	}
}

// TestSubscriptionReviewThroughAdminAPI: with review on for generic
// subscriptions, one waits until an operator approves it; the approval is
// in the subscription's history and the audit log.
func TestSubscriptionReviewThroughAdminAPI(t *testing.T) {
	e := startEMSD(t, t.TempDir(), registryConfig+"subscriptions:\n  auto_activate:\n    - ods: \"*\"\n      kind: explicit\n")
	sub01 := map[string]string{"fromASID": "200000000115", "Content-Type": "application/fhir+json"}
	generic := "/Bundle?type=message&MessageHeader.event=pds-change-of-gp-1&subscriptionRuleType=COUNTRYCODE&Organization.identifier=E92000001"
	resp, body := e.request(t, http.MethodPost, "/STU3/Subscription", genericJSON("SUB01", "SUB01_MAILBOX2", generic), sub01)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	id := loc[strings.LastIndex(strings.SplitN(loc, "/_history", 2)[0], "/")+1:]
	id = strings.SplitN(id, "/", 2)[0]

	// The admin API refuses callers without the token.
	req, _ := http.NewRequest(http.MethodGet, e.adminURL()+"/admin/v1/subscriptions/pending", nil)
	if r, _ := do(t, req); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d", r.StatusCode)
	}
	resp, body = e.admin(t, http.MethodGet, "/admin/v1/subscriptions/pending", "")
	if resp.StatusCode != 200 || !strings.Contains(body, id) || !strings.Contains(body, `"requested"`) {
		t.Fatalf("pending: %d %s", resp.StatusCode, body)
	}
	resp, body = e.admin(t, http.MethodPost, "/admin/v1/subscriptions/"+id+"/approve", `{"note":"IG checked"}`)
	if resp.StatusCode != 200 || !strings.Contains(body, `"active"`) {
		t.Fatalf("approve: %d %s", resp.StatusCode, body)
	}
	resp, body = e.request(t, http.MethodGet, "/STU3/Subscription/"+id, "", map[string]string{"fromASID": "200000000115"})
	if !strings.Contains(body, `<status value="active"/>`) {
		t.Fatalf("after approval: %d %s", resp.StatusCode, body)
	}
	resp, body = e.admin(t, http.MethodGet, "/admin/v1/subscriptions/"+id, "")
	if !strings.Contains(body, "operator:integration") || !strings.Contains(body, "IG checked") {
		t.Fatalf("history: %s", body)
	}
	resp, body = e.admin(t, http.MethodGet, "/admin/v1/audit", "")
	if !strings.Contains(body, `"/admin/v1/subscriptions/`+id+`/approve"`) || !strings.Contains(body, `"operator": "integration"`) {
		t.Fatalf("audit: %s", body)
	}
}
