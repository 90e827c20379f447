package subscription

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// adminCall serves one request through the admin routes.
func adminCall(t *testing.T, h http.Handler, method, path, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func TestAdminRoutes(t *testing.T) {
	f := newAPI(t, Policy{Review: map[string][]Kind{"*": {Generic}}})
	exp := idFromLocation(t, f.do(t, "POST", PathPrefix, asidRR8, subBody{}.XML()))
	gen := idFromLocation(t, f.do(t, "POST", PathPrefix, asidRR8, subBody{Criteria: critCountry}.XML()))
	other := idFromLocation(t, f.do(t, "POST", PathPrefix, asidX26, subBody{ODS: "X26", Endpoint: "X26MBX", Criteria: critCountry + "&tag=x26"}.XML()))

	type change struct{ before, after any }
	var changes []change
	mux := http.NewServeMux()
	err := RegisterAdmin(mux, f.h.Service(), AdminOptions{
		Actor:        func(*http.Request) string { return "operator:alice" },
		RecordChange: func(_ context.Context, before, after any) { changes = append(changes, change{before, after}) },
	})
	if err != nil {
		t.Fatal(err)
	}

	list := func(query string) AdminList {
		t.Helper()
		code, body := adminCall(t, mux, "GET", "/admin/v1/subscriptions"+query, "")
		if code != 200 {
			t.Fatalf("list %s: %d %s", query, code, body)
		}
		var out AdminList
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	ids := func(l AdminList) []string {
		var out []string
		for _, s := range l.Subscriptions {
			out = append(out, s.ID)
		}
		return out
	}
	// Operators see every organisation's subscriptions, filtered.
	if got := list(""); len(got.Subscriptions) != 3 {
		t.Fatalf("all: %v", ids(got))
	}
	if got := ids(list("?owner=X26")); len(got) != 1 || got[0] != other {
		t.Fatalf("owner: %v", got)
	}
	if got := ids(list("?kind=explicit")); len(got) != 1 || got[0] != exp {
		t.Fatalf("kind: %v", got)
	}
	if got := ids(list("?rule=COUNTRYCODE&owner=RR8")); len(got) != 1 || got[0] != gen {
		t.Fatalf("rule: %v", got)
	}
	page := list("?limit=2")
	if len(page.Subscriptions) != 2 || page.Next == "" {
		t.Fatalf("page 1: %+v", page)
	}
	if rest := list("?limit=2&after=" + page.Next); len(rest.Subscriptions) != 1 || rest.Next != "" {
		t.Fatalf("page 2: %+v", rest)
	}
	for _, bad := range []string{"?status=paused", "?kind=both", "?limit=0", "?rule=NOPE"} {
		if code, body := adminCall(t, mux, "GET", "/admin/v1/subscriptions"+bad, ""); code != 400 || !strings.Contains(body, strings.SplitN(bad[1:], "=", 2)[0]) {
			t.Errorf("%s: %d %s", bad, code, body)
		}
	}

	// The review queue holds the two generic ones.
	code, body := adminCall(t, mux, "GET", "/admin/v1/subscriptions/pending", "")
	if code != 200 || !strings.Contains(body, gen) || !strings.Contains(body, other) || strings.Contains(body, exp) {
		t.Fatalf("pending: %d %s", code, body)
	}
	// Approve with a note; a second approval is a conflict.
	if code, body := adminCall(t, mux, "POST", "/admin/v1/subscriptions/"+gen+"/approve", `{"note":"IG checked"}`); code != 200 || !strings.Contains(body, `"active"`) {
		t.Fatalf("approve: %d %s", code, body)
	}
	if code, _ := adminCall(t, mux, "POST", "/admin/v1/subscriptions/"+gen+"/approve", ""); code != http.StatusConflict {
		t.Fatalf("approve twice: %d", code)
	}
	if code, _ := adminCall(t, mux, "POST", "/admin/v1/subscriptions/"+gen+"/suspend", ""); code != 200 {
		t.Fatalf("suspend: %d", code)
	}
	if code, _ := adminCall(t, mux, "POST", "/admin/v1/subscriptions/"+gen+"/resume", ""); code != 200 {
		t.Fatalf("resume: %d", code)
	}
	if code, body := adminCall(t, mux, "POST", "/admin/v1/subscriptions/"+other+"/reject", "{bad"); code != 400 || !strings.Contains(body, "note") {
		t.Fatalf("bad body: %d %s", code, body)
	}
	// Detail carries the history with who and why.
	code, body = adminCall(t, mux, "GET", "/admin/v1/subscriptions/"+gen, "")
	var detail AdminDetail
	if err := json.Unmarshal([]byte(body), &detail); err != nil || code != 200 {
		t.Fatalf("get: %d %s", code, body)
	}
	if len(detail.History) != 4 || detail.History[1].Actor != "operator:alice" || detail.History[1].Note != "IG checked" {
		t.Fatalf("history: %+v", detail.History)
	}
	// Delete, then 404s.
	if code, _ := adminCall(t, mux, "DELETE", "/admin/v1/subscriptions/"+other, ""); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	for _, p := range []string{"GET /admin/v1/subscriptions/" + other, "DELETE /admin/v1/subscriptions/" + other, "POST /admin/v1/subscriptions/" + other + "/approve"} {
		m, path, _ := strings.Cut(p, " ")
		if code, _ := adminCall(t, mux, m, path, ""); code != 404 {
			t.Errorf("%s after delete: %d", p, code)
		}
	}
	// Every change was reported for the audit log, with before and after.
	if len(changes) != 4 {
		t.Fatalf("recorded %d changes", len(changes))
	}
	if b, a := changes[0].before.(*Subscription), changes[0].after.(*Subscription); b.Status != StatusRequested || a.Status != StatusActive {
		t.Fatalf("approve change %v → %v", b.Status, a.Status)
	}
	if changes[3].after != nil {
		t.Fatalf("delete change has an after: %v", changes[3].after)
	}
}
