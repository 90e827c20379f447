package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DecodeError is a problem in the YAML document itself: an unknown key, or a
// value of the wrong kind. Path is the dotted key path (map keys included,
// list items as [i]); Line is 1-based.
type DecodeError struct {
	Line int
	Path string
	Msg  string
}

func (e *DecodeError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return fmt.Sprintf("line %d: %s: %s", e.Line, e.Path, e.Msg)
}

// decode overlays a YAML document on c. Before handing the document to
// yaml.v3 it walks the node tree against Config's type, so that every error
// names the key path and line (yaml.v3's own messages name Go types instead)
// and all problems are reported at once rather than the first.
func (c *Config) decode(data []byte) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file is the defaults
		}
		return fmt.Errorf("parsing YAML: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("config must be a single YAML document")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	var errs []error
	check(root, reflect.TypeOf(Config{}), "", &errs)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// The walk above rejects everything KnownFields would; keep it as a
	// guard against the two drifting apart.
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(c); err != nil {
		return fmt.Errorf("decoding YAML: %w", err)
	}
	return nil
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	byteSizeType = reflect.TypeOf(ByteSize(0))
	dateType     = reflect.TypeOf(Date{})
	secretType   = reflect.TypeOf(Secret{})
)

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func nodeErr(errs *[]error, n *yaml.Node, path, format string, args ...any) {
	*errs = append(*errs, &DecodeError{Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// check reports every place where n cannot be decoded into a value of type t.
func check(n *yaml.Node, t reflect.Type, path string, errs *[]error) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	// null leaves the default in place.
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case durationType:
		if n.Kind != yaml.ScalarNode {
			nodeErr(errs, n, path, "must be a duration such as 90s, 5m or 168h")
		} else if _, err := time.ParseDuration(n.Value); err != nil {
			nodeErr(errs, n, path, "invalid duration %q (use Go syntax such as 90s, 5m or 168h)", n.Value)
		}
		return
	case byteSizeType:
		if n.Kind != yaml.ScalarNode {
			nodeErr(errs, n, path, "must be a size such as 3145728 or 3MiB")
		} else if _, err := ParseByteSize(n.Value); err != nil {
			nodeErr(errs, n, path, "%v", err)
		}
		return
	case dateType:
		var d Date
		if n.Kind != yaml.ScalarNode {
			nodeErr(errs, n, path, "must be a date YYYY-MM-DD")
		} else if err := d.UnmarshalYAML(n); err != nil {
			nodeErr(errs, n, path, "%v", err)
		}
		return
	case secretType:
		var s Secret
		if n.Kind != yaml.ScalarNode {
			nodeErr(errs, n, path, "must be a string (a value, file:PATH or env:VAR)")
		} else if err := s.set(n.Value); err != nil {
			nodeErr(errs, n, path, "%v", err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			nodeErr(errs, n, path, "must be a mapping of keys, got %s", describe(n))
			return
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fields[k.Value]
			if !ok {
				msg := fmt.Sprintf("unknown key %q", k.Value)
				if s := suggest(k.Value, fields); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				nodeErr(errs, k, path, "%s", msg)
				continue
			}
			check(v, f.Type, join(path, k.Value), errs)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			nodeErr(errs, n, path, "must be a mapping, got %s", describe(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				nodeErr(errs, k, path, "keys must be strings")
				continue
			}
			check(v, t.Elem(), join(path, k.Value), errs)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			nodeErr(errs, n, path, "must be a list, got %s", describe(n))
			return
		}
		for i, item := range n.Content {
			check(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			nodeErr(errs, n, path, "must be a string, got %s", describe(n))
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			nodeErr(errs, n, path, "must be true or false, got %s", describe(n))
		}
	case reflect.Int, reflect.Int64:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			nodeErr(errs, n, path, "must be an integer, got %s", describe(n))
		} else if _, err := strconv.ParseInt(n.Value, 0, 64); err != nil {
			nodeErr(errs, n, path, "integer %s out of range", n.Value)
		}
	case reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!float" && n.Tag != "!!int") {
			nodeErr(errs, n, path, "must be a number, got %s", describe(n))
		} else if _, err := strconv.ParseFloat(n.Value, 64); err != nil {
			nodeErr(errs, n, path, "number %s out of range", n.Value)
		}
	default:
		// A new field type needs a case above; fail loudly in tests.
		nodeErr(errs, n, path, "internal error: no check for Go type %s", t)
	}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

// yamlFields maps yaml keys to struct fields.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	out := make(map[string]reflect.StructField, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		out[name] = f
	}
	return out
}

// suggest returns the known key closest to key when it is a plausible typo.
func suggest(key string, fields map[string]reflect.StructField) string {
	best, bestDist := "", 3 // at most two edits
	for name := range fields {
		d := editDistance(key, name)
		if d < bestDist || (d == bestDist && name < best) {
			best, bestDist = name, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
