package refdata

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type adminFixture struct {
	srv     *httptest.Server
	svc     *Service
	mu      sync.Mutex
	changes [][2]any
}

func newAdminFixture(t *testing.T, importDir string) *adminFixture {
	t.Helper()
	svc, err := New(Options{DB: openDB(t), Logger: quietLogger(), ImportDir: importDir})
	if err != nil {
		t.Fatal(err)
	}
	fx := &adminFixture{svc: svc}
	mux := http.NewServeMux()
	err = svc.RegisterAdmin(mux, AdminOptions{
		Actor: func(r *http.Request) string { return "op-" + r.Header.Get("X-Op") },
		RecordChange: func(_ context.Context, before, after any) {
			fx.mu.Lock()
			fx.changes = append(fx.changes, [2]any{before, after})
			fx.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	fx.srv = httptest.NewServer(mux)
	t.Cleanup(fx.srv.Close)
	return fx
}

func (fx *adminFixture) do(t *testing.T, method, path, contentType string, body io.Reader, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, fx.srv.URL+path, body)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("X-Op", "alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

func upload(t *testing.T, name string) io.Reader {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestAdminImportListActivateRollback(t *testing.T) {
	fx := newAdminFixture(t, "testdata")
	var v Version
	if code := fx.do(t, "POST", "/admin/v1/refdata/nspl?name=NSPL_AUG_2020.csv", "text/csv", upload(t, "nspl-2020-08.csv"), &v); code != 201 {
		t.Fatalf("upload: %d", code)
	}
	if v.Version != 1 || !v.Active || v.Rows != 6 || v.Source != "NSPL_AUG_2020.csv" || v.Actor != "op-alice" || len(v.SHA256) != 64 {
		t.Errorf("uploaded version = %+v", v)
	}
	// Server-side path, not activated.
	if code := fx.do(t, "POST", "/admin/v1/refdata/nspl", "application/json", strings.NewReader(`{"path": "nspl-2025-11.csv", "activate": false}`), &v); code != 201 {
		t.Fatalf("path import: %d %+v", code, v)
	}
	if v.Version != 2 || v.Active {
		t.Errorf("path version = %+v", v)
	}
	var kv KindVersions
	fx.do(t, "GET", "/admin/v1/refdata/nspl", "", nil, &kv)
	if len(kv.Versions) != 2 || kv.Active == nil || kv.Active.Version != 1 {
		t.Errorf("list = %+v", kv)
	}
	if code := fx.do(t, "POST", "/admin/v1/refdata/nspl/2/activate", "", nil, &v); code != 200 || !v.Active {
		t.Errorf("activate: %d %+v", code, v)
	}
	if code := fx.do(t, "POST", "/admin/v1/refdata/nspl/rollback", "", nil, &v); code != 200 || v.Version != 1 {
		t.Errorf("rollback: %d %+v", code, v)
	}
	var all struct {
		Datasets []KindVersions `json:"datasets"`
		Active   string         `json:"active"`
	}
	fx.do(t, "GET", "/admin/v1/refdata", "", nil, &all)
	if len(all.Datasets) != 3 || all.Active != "nspl@1" || len(all.Datasets[1].Versions) != 0 {
		t.Errorf("list all = %+v", all)
	}
	if len(fx.changes) != 3 {
		t.Errorf("audit records = %d; want upload, activate, rollback", len(fx.changes))
	}
	// Lookups through the admin API.
	fx.do(t, "POST", "/admin/v1/refdata/subicb", "text/csv", upload(t, "subicb-2024.csv"), nil)
	fx.do(t, "POST", "/admin/v1/refdata/epraccur", "text/csv", upload(t, "epraccur.csv"), nil)
	var lr LookupResult
	if code := fx.do(t, "GET", "/admin/v1/refdata/lookup?postcode=wf140bq&practice=B86056", "", nil, &lr); code != 200 ||
		lr.Postcode == nil || lr.SubICB == nil || lr.SubICB.ODS != "X2C4Y" || lr.Practice == nil || lr.Practice.SubICB != "15F" {
		t.Errorf("lookup: %d %+v", code, lr)
	}
	var ok map[string]any
	if code := fx.do(t, "POST", "/admin/v1/refdata/demographics", "text/csv",
		strings.NewReader("nhs_number,postcode\n"+nhsMover+",LS17 7DF\n"), &ok); code != 200 || ok["rows"] != 1.0 {
		t.Errorf("demographics import: %d %v", code, ok)
	}
}

func TestAdminErrors(t *testing.T) {
	fx := newAdminFixture(t, t.TempDir())
	outside := filepath.Join(t.TempDir(), "x.csv")
	os.WriteFile(outside, []byte("pcds\n"), 0o600)
	for _, c := range []struct {
		method, path, ct, body string
		code                   int
		want                   string
	}{
		{"POST", "/admin/v1/refdata/nspl", "text/csv", "pcds,lad25cd,sicbl24cd,ctry25cd,doterm\r\nLS17 7DF,E08000035,E38000225,England,\r\n", 422, "line 2, column 4 (ctry25cd)"},
		{"POST", "/admin/v1/refdata/postcodes", "text/csv", "", 404, "is not nspl"},
		{"POST", "/admin/v1/refdata/nspl", "application/json", `{"path": "` + outside + `"}`, 400, "outside the import directory"},
		{"POST", "/admin/v1/refdata/nspl", "application/json", `{"path": "../x.csv"}`, 400, "path"},
		{"POST", "/admin/v1/refdata/nspl", "application/json", `{}`, 400, "expected"},
		{"POST", "/admin/v1/refdata/nspl?path=../x.csv", "", "", 400, "outside the import directory"},
		{"POST", "/admin/v1/refdata/nspl?activate=maybe", "text/csv", "", 400, "activate"},
		{"POST", "/admin/v1/refdata/nspl/7/activate", "", "", 404, "no such dataset version"},
		{"POST", "/admin/v1/refdata/nspl/x/activate", "", "", 400, "not a number"},
		{"POST", "/admin/v1/refdata/nspl/rollback", "", "", 409, "no previous version"},
		{"GET", "/admin/v1/refdata/lookup", "", "", 400, "give at least one"},
		{"GET", "/admin/v1/refdata/lookup?postcode=LS17+7DF", "", "", 404, "not in the active reference data"},
	} {
		var out map[string]any
		code := fx.do(t, c.method, c.path, c.ct, strings.NewReader(c.body), &out)
		if code != c.code || !strings.Contains(out["error"].(string), c.want) {
			t.Errorf("%s %s: %d %v; want %d %q", c.method, c.path, code, out, c.code, c.want)
		}
		if c.code == 422 && (out["line"] != 2.0 || out["column"] != 4.0 || out["columnName"] != "ctry25cd") {
			t.Errorf("422 body lacks the location: %v", out)
		}
	}
	if len(fx.changes) != 0 {
		t.Errorf("failed requests were audited: %v", fx.changes)
	}
	fx2 := newAdminFixture(t, "")
	var out map[string]any
	if code := fx2.do(t, "POST", "/admin/v1/refdata/nspl", "application/json", strings.NewReader(`{"path": "/etc/passwd"}`), &out); code != 400 || !strings.Contains(out["error"].(string), "disabled") {
		t.Errorf("path import without ImportDir: %d %v", code, out)
	}
}

// TestAdminSlowUploadOutlivesServerTimeouts: the admin server's short read
// and write timeouts must not cut off an import that takes longer.
func TestAdminSlowUploadOutlivesServerTimeouts(t *testing.T) {
	svc, err := New(Options{DB: openDB(t), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	if err := svc.RegisterAdmin(mux, AdminOptions{Actor: func(*http.Request) string { return "op" }}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = 100*time.Millisecond, 100*time.Millisecond
	srv.Start()
	defer srv.Close()
	good, _ := os.ReadFile("testdata/nspl-2025-11.csv")
	pr, pw := io.Pipe()
	go func() {
		for _, line := range strings.SplitAfter(string(good), "\r\n") {
			time.Sleep(60 * time.Millisecond)
			pw.Write([]byte(line))
		}
		pw.Close()
	}()
	resp, err := http.Post(srv.URL+"/admin/v1/refdata/nspl", "text/csv", pr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v Version
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 201 || v.Rows != 6 {
		t.Fatalf("slow upload: %d %+v %v", resp.StatusCode, v, err)
	}
}

func TestAdminPathImportRefusesSymlinkOut(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret.csv")
	os.WriteFile(outside, []byte("x\n"), 0o600)
	if err := os.Symlink(outside, filepath.Join(dir, "link.csv")); err != nil {
		t.Skip(err)
	}
	fx := newAdminFixture(t, dir)
	var out map[string]any
	if code := fx.do(t, "POST", "/admin/v1/refdata/nspl?path=link.csv", "", nil, &out); code != 400 || !strings.Contains(out["error"].(string), "outside") {
		t.Errorf("symlink out: %d %v", code, out)
	}
}
