package config

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ems.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestParsePrecedence checks defaults < file < environment < flags, one
// setting at a time and all together.
func TestParsePrecedence(t *testing.T) {
	file := writeConfig(t, `
data_dir: /from/file
listen: 127.0.0.1:1001
log:
  level: warn
  format: text
nats:
  url: nats://file:4222
publish:
  check_nhs_number: true
`)
	otherFile := writeConfig(t, "listen: 127.0.0.1:1999\n")

	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c Config)
	}{
		{
			name: "defaults only",
			check: func(t *testing.T, c Config) {
				want := Default()
				if err := want.finish(func(string) string { return "" }); err != nil {
					t.Fatal(err)
				}
				if c.String() != want.String() {
					t.Errorf("got\n%s\nwant\n%s", c, want)
				}
			},
		},
		{
			name: "file over defaults",
			args: []string{"--config", file},
			check: func(t *testing.T, c Config) {
				expect(t, "data_dir", c.DataDir, "/from/file")
				expect(t, "listen", c.Listen, "127.0.0.1:1001")
				expect(t, "admin_listen", c.AdminListen, "127.0.0.1:8081")
				expect(t, "log.level", c.Log.Level, "warn")
				expect(t, "nats.url", c.NATS.URL, "nats://file:4222")
				expect(t, "bbolt.path", c.Bbolt.Path, "/from/file/ems.db")
			},
		},
		{
			name: "EMS_CONFIG names the file",
			env:  map[string]string{"EMS_CONFIG": file},
			check: func(t *testing.T, c Config) {
				expect(t, "listen", c.Listen, "127.0.0.1:1001")
			},
		},
		{
			name: "--config wins over EMS_CONFIG",
			args: []string{"-config=" + otherFile},
			env:  map[string]string{"EMS_CONFIG": file},
			check: func(t *testing.T, c Config) {
				expect(t, "listen", c.Listen, "127.0.0.1:1999")
				expect(t, "data_dir", c.DataDir, "./ems-data")
			},
		},
		{
			name: "environment over file",
			args: []string{"--config", file},
			env: map[string]string{
				"EMS_DATA_DIR":                 "/from/env",
				"EMS_LISTEN":                   "127.0.0.1:2002",
				"EMS_ADMIN_LISTEN":             "127.0.0.1:2003",
				"EMS_LOG_LEVEL":                "debug",
				"EMS_LOG_FORMAT":               "json",
				"EMS_NATS_URL":                 "nats://env:4222",
				"EMS_ALLOW_INVALID_NHS_NUMBER": "true",
			},
			check: func(t *testing.T, c Config) {
				expect(t, "data_dir", c.DataDir, "/from/env")
				expect(t, "listen", c.Listen, "127.0.0.1:2002")
				expect(t, "admin_listen", c.AdminListen, "127.0.0.1:2003")
				expect(t, "log.level", c.Log.Level, "debug")
				expect(t, "log.format", c.Log.Format, "json")
				expect(t, "nats.url", c.NATS.URL, "nats://env:4222")
				expect(t, "publish.check_nhs_number", c.Publish.CheckNHSNumber, false)
				// Derived paths follow the final data_dir.
				expect(t, "bbolt.path", c.Bbolt.Path, "/from/env/ems.db")
				expect(t, "store_dir", c.NATS.Embedded.StoreDir, "/from/env/jetstream")
			},
		},
		{
			name: "flags over environment",
			args: []string{
				"--config", file,
				"--data-dir", "/from/flag",
				"--listen=127.0.0.1:3002",
				"--admin-listen", "",
				"--log-level", "error",
				"--log-format", "text",
				"--nats-url", "nats://flag:4222",
				"--allow-invalid-nhs-number",
			},
			env: map[string]string{
				"EMS_DATA_DIR":     "/from/env",
				"EMS_LISTEN":       "127.0.0.1:2002",
				"EMS_ADMIN_LISTEN": "127.0.0.1:2003",
				"EMS_LOG_LEVEL":    "debug",
				"EMS_LOG_FORMAT":   "json",
				"EMS_NATS_URL":     "nats://env:4222",
			},
			check: func(t *testing.T, c Config) {
				expect(t, "data_dir", c.DataDir, "/from/flag")
				expect(t, "listen", c.Listen, "127.0.0.1:3002")
				expect(t, "admin_listen", c.AdminListen, "")
				expect(t, "log.level", c.Log.Level, "error")
				expect(t, "log.format", c.Log.Format, "text")
				expect(t, "nats.url", c.NATS.URL, "nats://flag:4222")
				expect(t, "publish.check_nhs_number", c.Publish.CheckNHSNumber, false)
				expect(t, "bbolt.path", c.Bbolt.Path, "/from/flag/ems.db")
			},
		},
		{
			name: "a false flag beats a true environment variable",
			args: []string{"--allow-invalid-nhs-number=false"},
			env:  map[string]string{"EMS_ALLOW_INVALID_NHS_NUMBER": "1"},
			check: func(t *testing.T, c Config) {
				expect(t, "publish.check_nhs_number", c.Publish.CheckNHSNumber, true)
			},
		},
		{
			name: "an empty environment variable is unset",
			args: []string{"--config", file},
			env:  map[string]string{"EMS_LISTEN": ""},
			check: func(t *testing.T, c Config) {
				expect(t, "listen", c.Listen, "127.0.0.1:1001")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(tt.args, func(k string) string { return tt.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func expect[T comparable](t *testing.T, field string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", field, got, want)
	}
}

func TestParseErrors(t *testing.T) {
	bad := writeConfig(t, "nats:\n  events_stream:\n    retension: 1h\n")
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"unknown flag", []string{"--listne", "x"}, nil, "flag provided but not defined: -listne"},
		{"positional argument", []string{"serve"}, nil, `unexpected arguments: ["serve"]`},
		{"bad bool flag", []string{"--allow-invalid-nhs-number=maybe"}, nil, `want true or false, got "maybe"`},
		{"bad bool env", nil, map[string]string{"EMS_ALLOW_INVALID_NHS_NUMBER": "maybe"}, `environment variable EMS_ALLOW_INVALID_NHS_NUMBER: want true or false, got "maybe"`},
		{"missing file", []string{"--config", "/nonexistent/ems.yaml"}, nil, "reading config file"},
		{"unknown key in file", []string{"--config", bad}, nil, `line 3: nats.events_stream: unknown key "retension"`},
		{"invalid flag value named by field", []string{"--log-format", "xml"}, nil, `log.format: must be one of "json", "text", got "xml"`},
		{"invalid env value named by field", nil, map[string]string{"EMS_NATS_URL": "localhost"}, `nats.url: must be a URL such as nats://host:4222, got "localhost"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.args, func(k string) string { return tt.env[k] })
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if _, err := Parse([]string{"-h"}, nil); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: err = %v, want flag.ErrHelp", err)
	}
}

// TestParseSecretFromEnvironment resolves env: references through the
// injected environment, not the process's.
func TestParseSecretFromEnvironment(t *testing.T) {
	file := writeConfig(t, "admin_token: env:EMS_TEST_ADMIN_TOKEN\n")
	c, err := Parse([]string{"--config", file}, func(k string) string {
		if k == "EMS_TEST_ADMIN_TOKEN" {
			return plaintext
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.AdminToken.Value() != plaintext {
		t.Errorf("Value() = %q", c.AdminToken.Value())
	}
}

// TestRegisterFlagsSharedFlagSet is the cmd/emsd path: the flags live in the
// program's own flag set beside its other flags.
func TestRegisterFlagsSharedFlagSet(t *testing.T) {
	fs := flag.NewFlagSet("emsd", flag.ContinueOnError)
	verbose := fs.Bool("verbose", false, "unrelated flag of the program")
	f := RegisterFlags(fs)
	if err := fs.Parse([]string{"--verbose", "--listen", "127.0.0.1:0"}); err != nil {
		t.Fatal(err)
	}
	c, err := f.Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !*verbose || c.Listen != "127.0.0.1:0" {
		t.Errorf("verbose=%v listen=%q", *verbose, c.Listen)
	}
}

func TestUsageListsEveryFlagAndVariable(t *testing.T) {
	var buf bytes.Buffer
	Usage(&buf)
	out := buf.String()
	for _, want := range []string{"-config", "EMS_CONFIG", "-listen address", "(default 127.0.0.1:8080)", "(default ./ems-data)"} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q:\n%s", want, out)
		}
	}
	for _, s := range settings {
		if !strings.Contains(out, "-"+s.flag) || !strings.Contains(out, s.env) {
			t.Errorf("usage lacks --%s / %s", s.flag, s.env)
		}
	}
}
