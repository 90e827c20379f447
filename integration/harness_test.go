// Package integration runs the real binaries end to end: it builds emsd
// once, starts it on temp data dirs and free ports, and talks to it only
// over HTTP and NATS, as a publisher, subscriber or operator would.
package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the binaries TestMain builds.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ems-integration-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	args := []string{"build", "-o", binDir}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "../cmd/emsd", "../cmd/emsctl")
	build := exec.Command("go", args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// emsd is one running emsd process.
type emsd struct {
	t       *testing.T
	cmd     *exec.Cmd
	dataDir string
	args    []string
	env     []string

	mu      sync.Mutex
	logs    bytes.Buffer
	ready   map[string]any // the "ready" log line
	readyCh chan struct{}
	exited  chan struct{}
}

// startEMSD starts emsd on dataDir with a free HTTP port and an embedded NATS
// server that also listens on a free TCP port, so the test can read the
// stream back. extraConfig is appended to the generated config file.
func startEMSD(t *testing.T, dataDir string, extraConfig string) *emsd {
	t.Helper()
	cfg := filepath.Join(dataDir, "emsd.yaml")
	if _, err := os.Stat(cfg); os.IsNotExist(err) {
		body := "nats:\n  embedded:\n    client_listen: 127.0.0.1:0\n" +
			"admin:\n  tokens:\n    - name: integration\n      token: " + adminToken + "\n" + extraConfig
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e := &emsd{t: t, dataDir: dataDir,
		args: []string{"--config", cfg, "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}}
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *emsd) start() {
	e.t.Helper()
	e.cmd = exec.Command(filepath.Join(binDir, "emsd"), e.args...)
	e.cmd.Env = append(os.Environ(), e.env...)
	stdout, err := e.cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	e.cmd.Stderr = e.cmd.Stdout
	e.readyCh = make(chan struct{})
	e.exited = make(chan struct{})
	e.ready = nil
	if err := e.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	readyCh, exited := e.readyCh, e.exited
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Bytes()
			e.mu.Lock()
			e.logs.Write(line)
			e.logs.WriteByte('\n')
			e.mu.Unlock()
			var rec map[string]any
			if json.Unmarshal(line, &rec) == nil && rec["msg"] == "emsd ready" {
				e.mu.Lock()
				e.ready = rec
				e.mu.Unlock()
				once.Do(func() { close(readyCh) })
			}
		}
		_ = e.cmd.Wait()
		close(exited)
	}()
	select {
	case <-readyCh:
	case <-exited:
		e.t.Fatalf("emsd exited before it was ready:\n%s", e.logText())
	case <-time.After(60 * time.Second):
		e.t.Fatalf("emsd not ready after 60s:\n%s", e.logText())
	}
}

// kill sends SIGKILL and waits for the process to go.
func (e *emsd) kill() {
	_ = e.cmd.Process.Signal(syscall.SIGKILL)
	<-e.exited
}

// stop sends SIGTERM and waits for a clean exit.
func (e *emsd) stop() {
	select {
	case <-e.exited:
		return
	default:
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(30 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.exited
		e.t.Errorf("emsd did not stop within 30s of SIGTERM:\n%s", e.logText())
	}
}

func (e *emsd) logText() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.logs.String()
}

func (e *emsd) readyField(k string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, _ := e.ready[k].(string)
	return s
}

// adminToken is the operator token every test emsd accepts.
const adminToken = "integration-token-0123456789"

// adminURL is the operator API.
func (e *emsd) adminURL() string { return "http://" + e.readyField("admin") }

// admin calls the operator API with the test token.
func (e *emsd) admin(t *testing.T, method, path, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.adminURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, b := do(t, req)
	return resp, string(b)
}

// baseURL is the public FHIR API.
func (e *emsd) baseURL() string { return "http://" + e.readyField("http") }

// natsURL is the embedded server's TCP client URL.
func (e *emsd) natsURL() string { return e.readyField("nats") }

// post sends body to path with the given headers.
func (e *emsd) post(t *testing.T, path string, body []byte, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.baseURL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// fixture reads a file of the repository's shared test data.
func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
