package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func newServer(t *testing.T, now func() time.Time) (*Server, *AuditLog) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "a.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	audit, err := NewAuditLog(db, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{
		Tokens: []Token{{Name: "alice", Value: "alice-token-0123456789"}, {Name: "bob", Value: "bob-token-0123456789ab"}},
		Audit:  audit, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("POST /admin/v1/things/{id}/approve", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		RecordChange(r.Context(), map[string]string{"status": "requested"}, map[string]string{"status": "active", "by": Operator(r.Context())})
		w.WriteHeader(http.StatusOK)
	}))
	s.Handle("GET /admin/v1/things", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(Operator(r.Context())))
	}))
	return s, audit
}

func call(s http.Handler, method, path, token string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

func TestAuthentication(t *testing.T) {
	s, _ := newServer(t, nil)
	tests := []struct {
		name, token string
		status      int
		body        string
	}{
		{"no token", "", 401, "operator token"},
		{"wrong token", "alice-token-0123456788", 401, "operator token"},
		{"prefix of a token", "alice-token", 401, "operator token"},
		{"alice", "alice-token-0123456789", 200, "alice"},
		{"bob", "bob-token-0123456789ab", 200, "bob"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := call(s, http.MethodGet, "/admin/v1/things", tt.token)
			if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.body) {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
		})
	}
	req := httptest.NewRequest(http.MethodGet, "/admin/v1/things", nil)
	req.Header.Set("Authorization", "Basic YWxpY2U6cGFzcw==")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != 401 {
		t.Fatalf("basic auth accepted: %d", rec.Code)
	}
}

func TestAuditLog(t *testing.T) {
	clock := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	s, audit := newServer(t, now)
	if rec := call(s, http.MethodPost, "/admin/v1/things/42/approve", "alice-token-0123456789"); rec.Code != 200 {
		t.Fatal(rec.Code)
	}
	call(s, http.MethodPost, "/admin/v1/things/42/approve", "nope-nope-nope-nope")
	call(s, http.MethodGet, "/admin/v1/things", "bob-token-0123456789ab") // reads are not audited
	rec := call(s, http.MethodGet, "/admin/v1/audit", "bob-token-0123456789ab")
	var got struct{ Entries []Entry }
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err, rec.Body.String())
	}
	if len(got.Entries) != 2 {
		t.Fatalf("entries: %+v", got.Entries)
	}
	refused, approved := got.Entries[0], got.Entries[1] // newest first
	if refused.Operator != "" || refused.Status != 401 {
		t.Errorf("refusal entry %+v", refused)
	}
	if approved.Operator != "alice" || approved.Status != 200 || approved.Path != "/admin/v1/things/42/approve" ||
		compact(t, approved.Before) != `{"status":"requested"}` || compact(t, approved.After) != `{"by":"alice","status":"active"}` {
		t.Errorf("approval entry %+v (before %s after %s)", approved, approved.Before, approved.After)
	}
	// Retention: a day later the old entries are pruned as a new one lands.
	clock = clock.Add(25 * time.Hour)
	call(s, http.MethodPost, "/admin/v1/things/7/approve", "bob-token-0123456789ab")
	entries, err := audit.List(time.Time{}, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Operator != "bob" {
		t.Fatalf("after retention: %+v", entries)
	}
	if entries[0].Seq != 3 {
		t.Fatalf("sequence numbers must keep counting: %d", entries[0].Seq)
	}
}

func TestNewRefusesWeakSetups(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "a.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	audit, _ := NewAuditLog(db, 0)
	if _, err := New(Options{Audit: audit}); err == nil {
		t.Error("no tokens accepted")
	}
	if _, err := New(Options{Audit: audit, Tokens: []Token{{Name: "x", Value: "short"}}}); err == nil {
		t.Error("short token accepted")
	}
}

func compact(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var b strings.Builder
	buf := new(bytes.Buffer)
	if err := json.Compact(buf, raw); err != nil {
		t.Fatal(err)
	}
	b.Write(buf.Bytes())
	return b.String()
}

func TestAuditLogAppendAllKeepsOrderAndPrunes(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "a.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	audit, err := NewAuditLog(db, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	if err := audit.Append(Entry{Time: t0, Operator: "old"}); err != nil {
		t.Fatal(err)
	}
	batch := []Entry{{Time: t0.Add(2 * time.Hour), Operator: "a"}, {Time: t0.Add(2 * time.Hour), Operator: "b"}, {Time: t0.Add(2 * time.Hour), Operator: "c"}}
	if err := audit.AppendAll(batch); err != nil {
		t.Fatal(err)
	}
	if err := audit.AppendAll(nil); err != nil {
		t.Fatal(err)
	}
	got, err := audit.List(time.Time{}, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	var seqs []uint64
	for _, e := range got {
		ops, seqs = append(ops, e.Operator), append(seqs, e.Seq)
	}
	// Newest first; the hour-old entry was pruned by the batch's newest time.
	if fmt.Sprint(ops) != "[c b a]" || fmt.Sprint(seqs) != "[4 3 2]" {
		t.Fatalf("operators %v, seqs %v", ops, seqs)
	}
}
