package integration

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var updateGolden = flag.Bool("update-emsctl", false, "rewrite integration/testdata/emsctl golden files")

// ctl runs the built emsctl against one emsd with a clean environment: no
// user config file, the server, public API and token from EMS_* variables.
type ctl struct {
	t   *testing.T
	env []string
}

func newCtl(t *testing.T, e *emsd) *ctl {
	home := t.TempDir()
	return &ctl{t: t, env: []string{
		"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "PATH=" + os.Getenv("PATH"),
		"EMS_SERVER=" + e.adminURL(), "EMS_PUBLIC=" + e.baseURL(), "EMS_TOKEN=" + adminToken,
	}}
}

// result is one emsctl run.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

func (c *ctl) run(stdin string, args ...string) result {
	c.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "emsctl"), args...)
	cmd.Env = c.env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("running emsctl %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// ok runs emsctl and fails the test unless it exits 0.
func (c *ctl) ok(args ...string) string {
	c.t.Helper()
	r := c.run("", args...)
	if r.code != 0 {
		c.t.Fatalf("emsctl %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// fails runs emsctl, wants exit code want, and returns stderr.
func (c *ctl) fails(want int, args ...string) string {
	c.t.Helper()
	r := c.run("", args...)
	if r.code != want {
		c.t.Fatalf("emsctl %s: want exit %d, got %s", strings.Join(args, " "), want, r)
	}
	if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n != 0 && want != 0 {
		c.t.Errorf("emsctl %s: error should be one line, got:\n%s", strings.Join(args, " "), r.stderr)
	}
	return r.stderr
}

// normaliser replaces what differs from run to run (ids, times, ports,
// latencies) with stable placeholders. Ids are numbered in order of first
// appearance, so the golden file still shows which rows share an id.
type normaliser struct {
	ids map[string]string
}

var (
	idRE      = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\b[0-9a-f]{32}\b`)
	timeRE    = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)
	portRE    = regexp.MustCompile(`127\.0\.0\.1:\d+`)
	epTokenRE = regexp.MustCompile(`\.[0-9a-f]{16}\b`)
	msRE      = regexp.MustCompile(`\b\d+ms\b`)
	jsonMsRE  = regexp.MustCompile(`"(latencyMs|durationMs)": [0-9.e+-]+`)
)

func (n *normaliser) apply(s string) string {
	if n.ids == nil {
		n.ids = map[string]string{}
	}
	// Named ids first: subscription ids are 32 hex digits, event ids UUIDs.
	for id, p := range n.ids {
		if strings.HasPrefix(p, "<") && !strings.HasPrefix(p, "<ID") {
			s = strings.ReplaceAll(s, id, p)
		}
	}
	s = idRE.ReplaceAllStringFunc(s, func(id string) string {
		if p, ok := n.ids[id]; ok {
			return p
		}
		p := fmt.Sprintf("<ID%d>", len(n.ids)+1)
		n.ids[id] = p
		return p
	})
	s = timeRE.ReplaceAllString(s, "<TIME>")
	s = portRE.ReplaceAllString(s, "127.0.0.1:<PORT>")
	s = epTokenRE.ReplaceAllString(s, ".<EP>")
	s = msRE.ReplaceAllString(s, "<MS>")
	s = jsonMsRE.ReplaceAllString(s, `"$1": <MS>`)
	return s
}

// golden compares got, normalised, with testdata/emsctl/name. Placeholders
// change column widths, so tables are compared with runs of spaces
// collapsed.
func golden(t *testing.T, n *normaliser, name, got string) {
	t.Helper()
	got = n.apply(got)
	path := filepath.Join("testdata", "emsctl", name)
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update-emsctl to create it)", err)
	}
	if squeeze(string(want)) != squeeze(got) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

var spacesRE = regexp.MustCompile(` {2,}`)

func squeeze(s string) string { return spacesRE.ReplaceAllString(s, "  ") }
