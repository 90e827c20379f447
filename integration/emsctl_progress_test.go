package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// slowImport stands in for the reference-data import route: it reads the
// upload at a bounded rate, as a server validating rows would, and answers
// a version document of refdata's shape. It tests only what emsctl draws on
// a terminal, not an import (TestEmsctlRefdata does that against emsd).
func slowImport(t *testing.T) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/admin/v1/refdata" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"datasets":[{"kind":"nspl","versions":[{"kind":"nspl","version":1,"state":"ready","active":true}]}]}`))
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+adminToken || r.URL.Path != "/admin/v1/refdata/nspl" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"unexpected ` + r.URL.Path + `"}`))
			return
		}
		var rows int64
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			rows += int64(strings.Count(string(buf[:n]), "\n"))
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Error(err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{"kind": "nspl", "version": 1, "state": "ready", "rows": rows,
			"source": r.URL.Query().Get("name"), "active": true})
	}))
}

func postcodeFile(t *testing.T, rows int) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("pcds,oscty,ctry,sicbl\n")
	for i := 0; i < rows; i++ {
		fmt.Fprintf(&b, "LS%d %dAB,E08000035,E92000001,15F\n", i%99+1, i%9)
	}
	p := filepath.Join(t.TempDir(), "postcodes.csv")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEmsctlImportProgress runs `refdata import` under a pseudo-terminal
// (util-linux script) and checks the progress line; without a terminal the
// same command prints only the result.
func TestEmsctlImportProgress(t *testing.T) {
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script(1) not installed: no pseudo-terminal to draw on")
	}
	srv := slowImport(t)
	defer srv.Close()
	file := postcodeFile(t, 400000) // ~14 MB: more than loopback buffers hold, a few seconds at the server's pace
	bin := filepath.Join(binDir, "emsctl")
	env := append(os.Environ(), "EMS_SERVER="+srv.URL, "EMS_TOKEN="+adminToken, "XDG_CONFIG_HOME="+t.TempDir(), "TERM=xterm")

	cmdline := fmt.Sprintf("%s refdata import nspl %s", bin, file)
	cmd := exec.Command(script, "-qefc", cmdline, "/dev/null")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	screen := string(out)
	redraws := strings.Count(screen, "\r[")
	if redraws < 3 {
		t.Errorf("want the progress line redrawn several times, got %d:\n%q", redraws, screen)
	}
	for _, want := range []string{"rows/s", "ETA", "[" + strings.Repeat("=", 30) + "] 100% 400001 rows", "nspl@1"} {
		if !strings.Contains(screen, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, screen)
		}
	}

	// Colour only on a terminal, and never with --no-color.
	if !strings.Contains(screen, "\x1b[1mVERSION") {
		t.Errorf("table header not bold on a terminal:\n%q", screen)
	}
	noColor := exec.Command(script, "-qefc", bin+" --no-color refdata list", "/dev/null")
	noColor.Env = env
	out, _ = noColor.CombinedOutput()
	if strings.Contains(string(out), "\x1b[") || !strings.Contains(string(out), "nspl@1") {
		t.Errorf("--no-color output has escape codes:\n%q", out)
	}

	// Not a terminal: the result only.
	plain := exec.Command(bin, "refdata", "import", "nspl", file)
	plain.Env = env
	var stdout, stderr strings.Builder
	plain.Stdout, plain.Stderr = &stdout, &stderr
	if err := plain.Run(); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if stderr.Len() != 0 || !strings.Contains(stdout.String(), "nspl@1") || !strings.Contains(stdout.String(), "400001") {
		t.Errorf("without a terminal: stdout %q stderr %q", stdout.String(), stderr.String())
	}
}
