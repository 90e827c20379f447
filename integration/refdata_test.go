package integration

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// refdataFixture reads one of the refdata package's real-layout fixtures.
func refdataFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "subscription", "refdata", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type refVersion struct {
	Kind     string `json:"kind"`
	Version  uint64 `json:"version"`
	State    string `json:"state"`
	Source   string `json:"source"`
	SHA256   string `json:"sha256"`
	Rows     int64  `json:"rows"`
	Actor    string `json:"actor"`
	Active   bool   `json:"active"`
	Previous bool   `json:"previous"`
}

// TestRefdataAdminAPI drives the reference-data operator routes of a real
// emsd: upload imports of every kind, a server-side path import from the
// data directory's import folder, activation and rollback, lookups, and a
// broken file that names its line and changes nothing; then a restart, to
// show the active versions persist.
func TestRefdataAdminAPI(t *testing.T) {
	dir := t.TempDir()
	e := startEMSD(t, dir, "")
	call := func(method, path, body string, wantStatus int, out any) string {
		t.Helper()
		resp, b := e.admin(t, method, path, body)
		if resp.StatusCode != wantStatus {
			t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, wantStatus, b)
		}
		if out != nil {
			if err := json.Unmarshal([]byte(b), out); err != nil {
				t.Fatalf("%s %s: %v: %s", method, path, err, b)
			}
		}
		return b
	}
	var v refVersion
	call("POST", "/admin/v1/refdata/nspl?name=NSPL_AUG_2020_UK.csv", refdataFixture(t, "nspl-2020-08.csv"), 201, &v)
	if v.Version != 1 || !v.Active || v.Rows != 6 || v.State != "ready" || len(v.SHA256) != 64 || v.Actor == "" {
		t.Errorf("first import: %+v", v)
	}
	call("POST", "/admin/v1/refdata/subicb?name=sicbl.csv", refdataFixture(t, "subicb-2024.csv"), 201, &v)
	call("POST", "/admin/v1/refdata/epraccur?name=epraccur.csv", refdataFixture(t, "epraccur.csv"), 201, &v)

	// A server-side file, not activated: only <data_dir>/import is readable.
	if err := os.MkdirAll(filepath.Join(dir, "import"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "import", "NSPL_NOV_2025_UK.csv"), []byte(refdataFixture(t, "nspl-2025-11.csv")), 0o600); err != nil {
		t.Fatal(err)
	}
	call("POST", "/admin/v1/refdata/nspl?path=NSPL_NOV_2025_UK.csv&activate=false", "", 201, &v)
	if v.Version != 2 || v.Active {
		t.Errorf("path import: %+v", v)
	}
	call("POST", "/admin/v1/refdata/nspl?path=../emsd.yaml", "", 400, nil)

	// A broken file: the answer names the line and column; nothing changes.
	bad := strings.Replace(refdataFixture(t, "nspl-2025-11.csv"), `"E92000001"`, `"England"`, 1)
	var fail struct {
		Error      string `json:"error"`
		Line       int    `json:"line"`
		Column     int    `json:"column"`
		ColumnName string `json:"columnName"`
	}
	call("POST", "/admin/v1/refdata/nspl?name=bad.csv", bad, 422, &fail)
	if fail.Line != 2 || fail.Column != 16 || fail.ColumnName != "ctry25cd" || !strings.Contains(fail.Error, "bad.csv") {
		t.Errorf("bad file: %+v", fail)
	}

	var kv struct {
		Active   *refVersion  `json:"active"`
		Versions []refVersion `json:"versions"`
	}
	call("GET", "/admin/v1/refdata/nspl", "", 200, &kv)
	if len(kv.Versions) != 2 || kv.Active == nil || kv.Active.Version != 1 {
		t.Fatalf("versions after the failed import: %+v", kv)
	}
	call("POST", "/admin/v1/refdata/nspl/2/activate", "", 200, &v)
	call("POST", "/admin/v1/refdata/nspl/rollback", "", 200, &v)
	if v.Version != 1 {
		t.Errorf("rollback activated %+v", v)
	}
	call("POST", "/admin/v1/refdata/nspl/2/activate", "", 200, &v)

	var lookup struct {
		Versions string `json:"versions"`
		Postcode struct {
			LocalAuthority string `json:"localAuthority"`
			Country        string `json:"country"`
		} `json:"postcode"`
		SubICB   struct{ ODS string }    `json:"subICB"`
		Practice struct{ SubICB string } `json:"practice"`
	}
	call("GET", "/admin/v1/refdata/lookup?postcode=wf14+0bq&practice=B86056", "", 200, &lookup)
	if lookup.Versions != "nspl@2,subicb@1,epraccur@1" || lookup.Postcode.LocalAuthority != "E08000034" || lookup.SubICB.ODS != "X2C4Y" || lookup.Practice.SubICB != "15F" {
		t.Errorf("lookup: %+v", lookup)
	}
	call("POST", "/admin/v1/refdata/demographics?name=bootstrap.csv", "nhs_number,gp_practice,postcode\n"+patient+",B86056,LS17 7DF\n", 200, nil)

	// The versions and the active pointers survive a restart.
	e.stop()
	e = startEMSD(t, dir, "")
	var all struct {
		Active string `json:"active"`
	}
	resp, b := e.admin(t, "GET", "/admin/v1/refdata", "")
	if err := json.Unmarshal([]byte(b), &all); err != nil || resp.StatusCode != 200 || all.Active != "nspl@2,subicb@1,epraccur@1" {
		t.Errorf("after restart: %d %s", resp.StatusCode, b)
	}
	if resp, _ := e.admin(t, "GET", "/admin/v1/refdata/nspl", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("list after restart: %d", resp.StatusCode)
	}
}
