package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

// table is a kubectl-style table: an upper-case header and aligned columns.
type table struct {
	header []string
	rows   [][]string
}

func newTable(header ...string) *table { return &table{header: header} }

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.header, "\t"))
	for _, r := range t.rows {
		cells := make([]string, len(r))
		for i, c := range r {
			if c == "" {
				c = "-"
			}
			cells[i] = c
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// show writes an answer in the chosen format: the server's JSON as it came
// (indented) for json, the same document for yaml, or the table (and then
// the optional trailer lines) for table.
func (g *globals) show(cmd *cobra.Command, raw json.RawMessage, t *table, trailer ...string) error {
	w := cmd.OutOrStdout()
	switch g.output {
	case "json":
		return writeJSON(w, raw)
	case "yaml":
		return writeYAML(w, raw)
	}
	if err := g.painter(cmd).writeTable(w, t); err != nil {
		return err
	}
	for _, l := range trailer {
		if l != "" {
			fmt.Fprintln(w, l)
		}
	}
	return nil
}

func writeJSON(w io.Writer, raw json.RawMessage) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		return &exitError{exitFailure, fmt.Errorf("the server's answer is not JSON: %w", err)}
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

func writeYAML(w io.Writer, raw json.RawMessage) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return &exitError{exitFailure, fmt.Errorf("the server's answer is not JSON: %w", err)}
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(numbers(v)); err != nil {
		return err
	}
	return enc.Close()
}

// numbers turns json.Number into int64 or float64 so YAML shows numbers
// unquoted.
func numbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

// mustJSON encodes a value the CLI assembled itself (for example the results
// of a command acting on several ids) for show.
func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only CLI-built values of known types reach here
	}
	return b
}

// painter colours status words on a terminal. It paints the lines after
// tabwriter has aligned them: escape codes inside cells would count towards
// their width and break the alignment.
type painter struct{ on bool }

func (g *globals) painter(cmd *cobra.Command) painter {
	return painter{on: !g.noColor && g.output == "table" && isTerminal(cmd.OutOrStdout())}
}

var statusColors = map[string]string{
	"active": "32", "delivered": "32", "acknowledged": "32", "stored": "32", "replayed": "32", "closed": "32", "valid": "32",
	"converged": "32",
	"requested": "33", "pending": "33", "retrying": "33", "half-open": "33", "loading": "33", "behind": "33",
	"error": "31", "dead": "31", "open": "31", "invalid": "31", "failing": "31",
	"off": "90",
}

// writeTable writes t, colouring known status words when on.
func (p painter) writeTable(w io.Writer, t *table) error {
	if !p.on {
		return t.write(w)
	}
	var buf bytes.Buffer
	if err := t.write(&buf); err != nil {
		return err
	}
	lines := strings.SplitAfter(buf.String(), "\n")
	for i, l := range lines {
		if i == 0 {
			l = "\x1b[1m" + strings.TrimSuffix(l, "\n") + "\x1b[0m\n"
		} else {
			l = " " + l
			for word, c := range statusColors {
				l = strings.Replace(l, " "+word+" ", " \x1b["+c+"m"+word+"\x1b[0m ", 1)
				l = strings.Replace(l, " "+word+"\n", " \x1b["+c+"m"+word+"\x1b[0m\n", 1)
			}
			l = l[1:]
		}
		if _, err := io.WriteString(w, l); err != nil {
			return err
		}
	}
	return nil
}

// ts shows an instant in UTC to the second; zero shows as "-".
func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
