package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is the emsd under test: started by the benchmark, or one already
// running (--server), in which case pid may be 0 and process figures are
// not available.
type server struct {
	base, admin, token string
	pid                int
	cmd                *exec.Cmd
	logPath            string
	startup            time.Duration // exec to ready line
	startupMS          int64         // as emsd reports it
}

// buildEMSD compiles cmd/emsd into dir when no binary is given.
func buildEMSD(dir string) (string, error) {
	out := filepath.Join(dir, "emsd")
	cmd := exec.Command("go", "build", "-o", out, "github.com/ems-broker/ems/cmd/emsd")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building emsd: %w", err)
	}
	return out, nil
}

// startServer runs emsd on dataDir with cfg and waits for its ready line.
func startServer(bin, dataDir, cfg, token string, env []string) (*server, error) {
	cfgPath := filepath.Join(dataDir, "emsd.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dataDir, "emsd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config", cfgPath, "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting emsd: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s := &server{token: token, pid: cmd.Process.Pid, cmd: cmd, logPath: logPath}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if rec := readyLine(logPath); rec != nil {
			s.startup = time.Since(started)
			s.base = "http://" + fmt.Sprint(rec["http"])
			s.admin = "http://" + fmt.Sprint(rec["admin"])
			if v, ok := rec["startup_ms"].(float64); ok {
				s.startupMS = int64(v)
			}
			return s, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("emsd exited before it was ready; log:\n%s", tail(logPath, 4000))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("emsd not ready after 5 minutes")
		}
	}
}

func readyLine(path string) map[string]any {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if !bytes.Contains(sc.Bytes(), []byte(`"emsd ready"`)) {
			continue
		}
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "emsd ready" {
			return rec
		}
	}
	return nil
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// stop ends the emsd the benchmark started (SIGTERM, then SIGKILL).
func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		for syscall.Kill(s.pid, 0) == nil {
			time.Sleep(20 * time.Millisecond)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
	}
}

// procStat is the CPU time and memory of a process from /proc.
type procStat struct {
	cpu       time.Duration // user + system
	rss, peak int64         // VmRSS, VmHWM in bytes
	anon      int64         // RssAnon: the heap and stacks, without mapped files
	file      int64         // RssFile: mapped file pages (the bbolt map)
}

func readProc(pid int) (procStat, error) {
	var st procStat
	if pid == 0 {
		return st, fmt.Errorf("no pid")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	// Fields after the parenthesised command name; utime and stime are
	// the 14th and 15th fields of the whole line.
	rest := string(b[bytes.LastIndexByte(b, ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return st, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	st.cpu = time.Duration(ut+stt) * time.Second / clkTck
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			st.rss = kb << 10
		case "VmHWM":
			st.peak = kb << 10
		case "RssAnon":
			st.anon = kb << 10
		case "RssFile":
			st.file = kb << 10
		}
	}
	return st, nil
}

// captureProfile fetches a CPU profile of emsd over seconds from the admin
// pprof endpoint into path.
func (s *server) captureProfile(ctx context.Context, seconds int, path string) error {
	return s.fetchPprof(ctx, fmt.Sprintf("profile?seconds=%d", seconds), path)
}

// captureHeap fetches emsd's heap profile (live objects as of its last
// garbage collection, and allocations since it started) into path.
func (s *server) captureHeap(ctx context.Context, path string) error {
	return s.fetchPprof(ctx, "heap", path)
}

func (s *server) fetchPprof(ctx context.Context, what, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.admin+"/debug/pprof/"+what, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetching %s profile: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("fetching %s profile: HTTP %d: %.200s", what, resp.StatusCode, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("writing %s profile: %w", what, err)
	}
	return f.Close()
}

// loadAvg is the 1-minute load average, stated with every run because the
// machine is shared.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:3], " ")
}
