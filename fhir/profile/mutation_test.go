package profile

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/fhir/profile/internal/load"
)

// mutation is one row of testdata/mutations.txt: an example bundle, one
// edit, and the issue the edit must produce.
type mutation struct {
	line                        int
	kind, file, op, path, arg   string
	extra                       string // "Type=profileURL" added through BundleOptions.Extra
	severity, issueType, at, in string
}

func readMutations(t *testing.T) []mutation {
	f, err := os.Open("testdata/mutations.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []mutation
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Split(line, " | ")
		if len(fs) != 10 {
			t.Fatalf("mutations.txt:%d: want 10 fields, got %d", n, len(fs))
		}
		for i := range fs {
			fs[i] = strings.TrimSpace(fs[i])
		}
		out = append(out, mutation{line: n, kind: fs[0], file: fs[1], op: fs[2], path: fs[3], arg: fs[4], extra: fs[5],
			severity: fs[6], issueType: fs[7], at: fs[8], in: fs[9]})
	}
	return out
}

// find resolves a location such as "Bundle.entry[2].resource.identifier[0]"
// in a bundle; a segment without index means the first child of that name.
func find(root *fhir.Node, path string) (parent, node *fhir.Node, err error) {
	segs := strings.Split(path, ".")
	if segs[0] != root.Name {
		return nil, nil, fmt.Errorf("path must start with %s", root.Name)
	}
	cur := root
	for _, seg := range segs[1:] {
		if cur.Name == "resource" || cur.Name == "contained" {
			if r := cur.Resource(); r != nil {
				cur = r
			}
		}
		name, idx := seg, 0
		if i := strings.IndexByte(seg, '['); i > 0 {
			name = seg[:i]
			idx, err = strconv.Atoi(strings.TrimSuffix(seg[i+1:], "]"))
			if err != nil {
				return nil, nil, err
			}
		}
		kids := cur.ChildrenNamed(name)
		if idx >= len(kids) {
			return nil, nil, fmt.Errorf("no %s[%d] under %s", name, idx, cur.Name)
		}
		parent, cur = cur, kids[idx]
	}
	return parent, cur, nil
}

func fragment(t *testing.T, xml string) []*fhir.Node {
	n, err := load.XML([]byte(`<x xmlns="http://hl7.org/fhir">` + xml + `</x>`))
	if err != nil {
		t.Fatalf("fragment %q: %v", xml, err)
	}
	return n.Children
}

func apply(t *testing.T, b *fhir.Node, m mutation) {
	parent, node, err := find(b, m.path)
	if err != nil {
		t.Fatalf("mutations.txt:%d: %v", m.line, err)
	}
	idx := -1
	if parent != nil {
		for i, c := range parent.Children {
			if c == node {
				idx = i
			}
		}
	}
	switch m.op {
	case "set":
		node.Value, node.HasValue = m.arg, true
	case "del":
		parent.Children = append(parent.Children[:idx:idx], parent.Children[idx+1:]...)
	case "rename":
		node.Name = m.arg
	case "add": // append children parsed from an XML fragment
		if node.Name == "resource" {
			node = node.Resource()
		}
		node.Children = append(node.Children, fragment(t, m.arg)...)
	case "insert": // insert an XML fragment before node
		kids := append(fragment(t, m.arg), parent.Children[idx:]...)
		parent.Children = append(parent.Children[:idx:idx], kids...)
	case "replace":
		kids := append(fragment(t, m.arg), parent.Children[idx+1:]...)
		parent.Children = append(parent.Children[:idx:idx], kids...)
	case "dup":
		cp := *node
		kids := append([]*fhir.Node{&cp}, parent.Children[idx:]...)
		parent.Children = append(parent.Children[:idx:idx], kids...)
	default:
		t.Fatalf("mutations.txt:%d: unknown op %q", m.line, m.op)
	}
}

func extraOf(s string) map[string]string {
	if s == "-" || s == "" {
		return nil
	}
	typ, url, _ := strings.Cut(s, "=")
	return map[string]string{typ: url}
}

// TestMutations checks every row of the mutation corpus: the unmutated
// example has no such issue, the mutated one has exactly the expected issue
// (severity, type, location, diagnostic text).
func TestMutations(t *testing.T) {
	v := validator(t)
	ms := readMutations(t)
	kinds := map[string]int{}
	profiles := map[string]int{}
	for _, m := range ms {
		kinds[m.kind]++
		t.Run(fmt.Sprintf("%d-%s", m.line, m.kind), func(t *testing.T) {
			opts := BundleOptions{Extra: extraOf(m.extra)}
			b := readBundle(t, "testdata/examples/"+m.file)
			for _, is := range v.ValidateBundle(b, opts) {
				if matches(is, m) {
					t.Fatalf("the unmutated example already has %s | %s", is.Expression, is.Diagnostics)
				}
			}
			apply(t, b, m)
			issues := v.ValidateBundle(b, opts)
			for _, is := range issues {
				if matches(is, m) {
					profiles[strings.SplitN(is.Diagnostics, ":", 2)[0]]++
					return
				}
			}
			var got []string
			for _, is := range issues {
				got = append(got, fmt.Sprintf("%s | %s | %s | %s", is.Severity, is.Type(), is.Expression, is.Diagnostics))
			}
			t.Errorf("mutations.txt:%d: want %s %s at %s containing %q; got:\n%s", m.line, m.severity, m.issueType, m.at, m.in, strings.Join(got, "\n"))
		})
	}
	t.Logf("%d cases, %d rule kinds, issues from %d profiles: %v", len(ms), len(kinds), len(profiles), profiles)
	if len(ms) < 150 {
		t.Errorf("only %d mutation cases, want at least 150", len(ms))
	}
	for k, n := range kinds {
		if n < 3 {
			t.Errorf("rule kind %s has %d cases, want at least 3", k, n)
		}
	}
}

func matches(is fhir.Issue, m mutation) bool {
	return string(is.Severity) == m.severity && is.Type() == m.issueType && is.Expression == m.at && strings.Contains(is.Diagnostics, m.in)
}
