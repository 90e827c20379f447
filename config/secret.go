package config

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"gopkg.in/yaml.v3"
)

// Secret is a password, token or key. In the file it is written inline, or
// as a reference resolved when the configuration is loaded:
//
//	file:/run/secrets/mesh-password   the file's contents, one trailing newline removed
//	env:MESH_PASSWORD                 the environment variable's value
//	inline:file:not-a-reference       the rest, literally (for a value that
//	                                  itself starts with file: or env:)
//
// A Secret never shows its value when printed (any fmt verb), logged with
// slog, or marshalled to YAML, JSON or text: a reference shows as the
// reference, an inline value as "<redacted>". Only Value reveals it.
type Secret struct {
	ref      string // "file:…" or "env:…", kept so that printing can show it
	value    string
	resolved bool
}

// Redacted is what a Secret with an inline value prints as.
const Redacted = "<redacted>"

// NewSecret returns a resolved inline secret (for tests and for callers
// building a Config in code).
func NewSecret(value string) Secret { return Secret{value: value, resolved: true} }

// Value returns the secret. It is empty when the secret was not given.
// A reference that was never resolved (a Secret decoded outside Load, LoadFile
// or Parse) also returns "", never the reference itself.
func (s Secret) Value() string {
	if !s.resolved {
		return ""
	}
	return s.value
}

// IsSet reports whether a value or reference was given.
func (s Secret) IsSet() bool { return s.ref != "" || s.value != "" }

func (s Secret) redacted() string {
	switch {
	case s.ref != "":
		return s.ref
	case s.value != "":
		return Redacted
	}
	return ""
}

// String, GoString, Format, LogValue and the marshallers all show the
// redacted form, so no formatting path can leak the value.
func (s Secret) String() string                    { return s.redacted() }
func (s Secret) GoString() string                  { return fmt.Sprintf("config.Secret(%q)", s.redacted()) }
func (s Secret) Format(f fmt.State, verb rune)     { fmt.Fprint(f, s.redacted()) }
func (s Secret) LogValue() slog.Value              { return slog.StringValue(s.redacted()) }
func (s Secret) MarshalText() ([]byte, error)      { return []byte(s.redacted()), nil }
func (s Secret) MarshalYAML() (any, error)         { return s.redacted(), nil }
func (s Secret) MarshalJSON() ([]byte, error)      { return []byte(fmt.Sprintf("%q", s.redacted())), nil }
func (s *Secret) UnmarshalYAML(n *yaml.Node) error { return s.set(n.Value) }

// set parses the written form; references are resolved later, once the
// environment function is known.
func (s *Secret) set(raw string) error {
	*s = Secret{}
	switch {
	case raw == "":
		// Not given: the zero Secret, equal to the default.
	case strings.HasPrefix(raw, "inline:"):
		s.value, s.resolved = strings.TrimPrefix(raw, "inline:"), true
	case strings.HasPrefix(raw, "file:"):
		if strings.TrimPrefix(raw, "file:") == "" {
			return errors.New(`"file:" reference without a path`)
		}
		s.ref = raw
	case strings.HasPrefix(raw, "env:"):
		if strings.TrimPrefix(raw, "env:") == "" {
			return errors.New(`"env:" reference without a variable name`)
		}
		s.ref = raw
	default:
		s.value, s.resolved = raw, true
	}
	return nil
}

func (s *Secret) resolve(env func(string) string, readFile func(string) ([]byte, error)) error {
	if s.resolved || s.ref == "" {
		return nil
	}
	switch {
	case strings.HasPrefix(s.ref, "file:"):
		path := strings.TrimPrefix(s.ref, "file:")
		data, err := readFile(path)
		if err != nil {
			return fmt.Errorf("reading secret file: %w", err)
		}
		// Files written with echo or an editor end in a newline that is
		// not part of the secret.
		v := strings.TrimSuffix(string(data), "\n")
		v = strings.TrimSuffix(v, "\r")
		if v == "" {
			return fmt.Errorf("secret file %s is empty", path)
		}
		s.value = v
	case strings.HasPrefix(s.ref, "env:"):
		name := strings.TrimPrefix(s.ref, "env:")
		v := env(name)
		if v == "" {
			return fmt.Errorf("environment variable %s is not set or empty", name)
		}
		s.value = v
	}
	s.resolved = true
	return nil
}
