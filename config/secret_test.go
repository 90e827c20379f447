package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const plaintext = "hunter2-very-secret"

// TestSecretNeverPrinted tries every way a Secret, or a struct holding one,
// gets turned into text.
func TestSecretNeverPrinted(t *testing.T) {
	c := Default()
	c.AdminToken = NewSecret(plaintext)
	c.NATS.URL = "nats://127.0.0.1:4222"
	c.NATS.Token = NewSecret(plaintext)

	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "token", c.AdminToken, "nats", c.NATS)
	var textLogged bytes.Buffer
	slog.New(slog.NewTextHandler(&textLogged, nil)).Info("config", "token", c.AdminToken)

	jsonSecret, err := json.Marshal(c.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	jsonConfig, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	yamlSecret, err := yaml.Marshal(c.NATS)
	if err != nil {
		t.Fatal(err)
	}

	outputs := map[string]string{
		"Redacted":      c.Redacted(),
		"%v config":     fmt.Sprintf("%v", c),
		"%+v config":    fmt.Sprintf("%+v", c),
		"%#v nats":      fmt.Sprintf("%#v", c.NATS),
		"%+v nats":      fmt.Sprintf("%+v", c.NATS),
		"%s secret":     fmt.Sprintf("%s", c.AdminToken),
		"%q secret":     fmt.Sprintf("%q", c.AdminToken),
		"%x secret":     fmt.Sprintf("%x", c.AdminToken),
		"%#v secret":    fmt.Sprintf("%#v", c.AdminToken),
		"String":        c.AdminToken.String(),
		"slog json":     logged.String(),
		"slog text":     textLogged.String(),
		"json secret":   string(jsonSecret),
		"json config":   string(jsonConfig),
		"yaml nats":     string(yamlSecret),
		"%v pointer":    fmt.Sprintf("%v", &c.AdminToken),
		"%v in a slice": fmt.Sprintf("%v", []Secret{c.AdminToken}),
	}
	for name, out := range outputs {
		if strings.Contains(out, plaintext) {
			t.Errorf("%s leaks the secret: %s", name, out)
		}
	}
	if !strings.Contains(c.Redacted(), "admin_token: <redacted>") {
		t.Errorf("Redacted does not mark the secret:\n%s", c.Redacted())
	}
	if c.AdminToken.Value() != plaintext {
		t.Errorf("Value() = %q", c.AdminToken.Value())
	}
}

func TestSecretReferences(t *testing.T) {
	dir := t.TempDir()
	withNewline := filepath.Join(dir, "token")
	if err := os.WriteFile(withNewline, []byte(plaintext+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"EMS_TEST_TOKEN": plaintext}
	tests := []struct {
		raw       string
		wantValue string
		wantShown string // what printing shows
		wantErr   string
	}{
		{raw: plaintext, wantValue: plaintext, wantShown: Redacted},
		{raw: "file:" + withNewline, wantValue: plaintext, wantShown: "file:" + withNewline},
		{raw: "env:EMS_TEST_TOKEN", wantValue: plaintext, wantShown: "env:EMS_TEST_TOKEN"},
		{raw: "inline:file:abc", wantValue: "file:abc", wantShown: Redacted},
		{raw: "", wantValue: "", wantShown: ""},
		{raw: "env:EMS_TEST_UNSET", wantErr: "environment variable EMS_TEST_UNSET is not set or empty"},
		{raw: "file:" + filepath.Join(dir, "missing"), wantErr: "reading secret file"},
		{raw: "file:" + empty, wantErr: "is empty"},
		{raw: "file:", wantErr: "without a path"},
		{raw: "env:", wantErr: "without a variable name"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			var s Secret
			err := s.set(tt.raw)
			if err == nil {
				// A reference holds no value until it is resolved.
				if strings.HasPrefix(tt.raw, "env:") || strings.HasPrefix(tt.raw, "file:") {
					if s.Value() != "" {
						t.Errorf("unresolved reference has Value %q", s.Value())
					}
				}
				err = s.resolve(func(k string) string { return env[k] }, os.ReadFile)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Value() != tt.wantValue {
				t.Errorf("Value() = %q, want %q", s.Value(), tt.wantValue)
			}
			if s.String() != tt.wantShown {
				t.Errorf("String() = %q, want %q", s.String(), tt.wantShown)
			}
		})
	}
}

// TestSecretFileThroughLoad covers a file: reference end to end, as the
// MESH and webhook secrets will be given in production.
func TestSecretFileThroughLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(path, []byte(plaintext+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load([]byte("admin_token: file:" + path + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.AdminToken.Value() != plaintext {
		t.Errorf("Value() = %q", c.AdminToken.Value())
	}
	if out := c.Redacted(); !strings.Contains(out, "admin_token: file:"+path) || strings.Contains(out, plaintext) {
		t.Errorf("Redacted:\n%s", out)
	}
}

// TestEachSecretFindsNestedSecrets guards the reflection walk that resolves
// secrets: a Secret inside a map value, list item or pointer (where MESH
// mailbox passwords and webhook secrets will live) must be resolved too.
func TestEachSecretFindsNestedSecrets(t *testing.T) {
	type inner struct {
		S Secret `yaml:"s"`
	}
	type nested struct {
		A    Secret           `yaml:"a"`
		M    map[string]inner `yaml:"m"`
		L    []inner          `yaml:"l"`
		P    *inner           `yaml:"p"`
		Nil  *inner           `yaml:"nil"`
		skip Secret
	}
	ref := func() Secret {
		var s Secret
		if err := s.set("env:EMS_TEST_TOKEN"); err != nil {
			t.Fatal(err)
		}
		return s
	}
	v := nested{
		A:    ref(),
		M:    map[string]inner{"x": {ref()}, "y": {ref()}},
		L:    []inner{{ref()}, {ref()}},
		P:    &inner{ref()},
		skip: ref(),
	}
	var paths []string
	err := eachSecret(reflect.ValueOf(&v).Elem(), "", func(s *Secret, path string) error {
		paths = append(paths, path)
		return s.resolve(func(string) string { return plaintext }, os.ReadFile)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "m.x.s", "m.y.s", "l[0].s", "l[1].s", "p.s"}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("paths = %q, want %q", paths, want)
	}
	for name, s := range map[string]Secret{"a": v.A, "m.x": v.M["x"].S, "m.y": v.M["y"].S, "l[1]": v.L[1].S, "p": v.P.S} {
		if s.Value() != plaintext {
			t.Errorf("%s not resolved", name)
		}
	}
	if v.skip.Value() != "" {
		t.Error("unexported field resolved")
	}

	// The first failure is reported with its path.
	c := Default()
	c.NATS.URL = "nats://127.0.0.1:4222"
	c.NATS.Token = ref()
	err = c.resolveSecrets(func(string) string { return "" }, os.ReadFile)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "nats.token" {
		t.Errorf("err = %v, want a FieldError for nats.token", err)
	}
}
