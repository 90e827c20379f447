package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ems-broker/ems/subscription/refdata"
)

const refdataPath = "/admin/v1/refdata"

// refKinds are what import accepts: the datasets, and the patients'
// demographics bootstrap file.
var refKinds = []string{string(refdata.NSPL), string(refdata.SubICB), string(refdata.Practices), "demographics"}

func refTable(vs []refdata.Version) *table {
	t := newTable("VERSION", "STATE", "ACTIVE", "ROWS", "SIZE", "SOURCE", "BY", "FINISHED", "ACTIVATED")
	for _, v := range vs {
		active := ""
		switch {
		case v.Active:
			active = "active"
		case v.Previous:
			active = "previous"
		}
		activated := ""
		if v.Activated != nil {
			activated = ts(*v.Activated)
		}
		t.add(v.Label(), string(v.State), active, strconv.FormatInt(v.Rows, 10), bytesText(uint64(max(v.Bytes, 0))),
			v.Source, v.Actor, ts(v.Finished), activated)
	}
	return t
}

func newRefdataCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "refdata",
		Short: "Import and activate reference data for generic subscriptions",
		Long: `Reference data lets generic subscriptions match by GP practice, sub-ICB,
local authority or country: nspl (ONS postcode directory), subicb (ONS sub-ICB
names) and epraccur (ODS GP practices). An import makes a new version;
activating one switches matching to it at once, and the previous version stays
for rollback. Versions are named KIND@N, as match explanations show them.`,
		Example: `  emsctl refdata import nspl NSPL_NOV_2026_UK.csv
  emsctl refdata list
  emsctl refdata activate nspl@3
  emsctl refdata rollback nspl`,
	}
	var activate bool
	imp := &cobra.Command{
		Use:   "import KIND FILE",
		Short: "Upload a reference-data file as a new version (activated unless --activate=false)",
		Long: `Stream a reference-data file to the server as a new version of KIND (nspl,
subicb, epraccur, or demographics for the patients' bootstrap CSV). On a
terminal a progress bar shows the rows sent, rows per second and the time left;
otherwise emsctl prints only the result. A file the server refuses is reported
with the line and column at fault.`,
		Example: `  emsctl refdata import nspl NSPL_NOV_2026_UK.csv
  emsctl refdata import epraccur epraccur.csv --activate=false`,
		Args:      cobra.ExactArgs(2),
		ValidArgs: refKinds,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			f, err := os.Open(args[1])
			if err != nil {
				return usageErr("reading %s: %w", args[1], err)
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return usageErr("reading %s: %w", args[1], err)
			}
			p := newProgress(f, st.Size(), cmd.ErrOrStderr())
			if isTerminal(cmd.ErrOrStderr()) {
				p.draw(200 * time.Millisecond)
			}
			q := url.Values{"name": {st.Name()}, "activate": {strconv.FormatBool(activate)}}
			// An import of a national file takes minutes: no time limit
			// beyond the operator's ^C.
			uc := *c
			uc.http = &http.Client{}
			raw, err := uc.call(cmd.Context(), http.MethodPost, refdataPath+"/"+pathEscape(args[0]), q,
				uploadBody{p, st.Size()}, "text/csv", nil)
			p.finish()
			if err != nil {
				return importFailure(args[1], raw, err)
			}
			var v refdata.Version
			if json.Unmarshal(raw, &v) != nil || v.Kind == "" {
				// demographics answers {kind, source, rows}.
				var d struct {
					Kind, Source string
					Rows         int64
				}
				_ = json.Unmarshal(raw, &d)
				t := newTable("KIND", "SOURCE", "ROWS")
				t.add(d.Kind, d.Source, strconv.FormatInt(d.Rows, 10))
				return g.show(cmd, raw, t)
			}
			return g.show(cmd, raw, refTable([]refdata.Version{v}))
		},
	}
	imp.Flags().BoolVar(&activate, "activate", true, "activate the version when the import completes")
	list := &cobra.Command{
		Use:   "list [KIND]",
		Short: "List reference-data versions, with the active and previous ones marked",
		Long: `List the versions this node has of each dataset, with the active and previous
ones marked. In cluster mode a second table shows every node's report: the
version of each kind it matches with (and the cluster's active one where they
differ), what it is loading, its last load failure, and its state: converged,
loading, failing or behind.`,
		Example:   "  emsctl refdata list\n  emsctl refdata list nspl -o json",
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: refKinds[:3],
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			var all refdataList
			var raw json.RawMessage
			if len(args) == 1 {
				var kv refdata.KindVersions
				if raw, err = c.get(cmd.Context(), refdataPath+"/"+pathEscape(args[0]), nil, &kv); err != nil {
					return err
				}
				all.Datasets = []refdata.KindVersions{kv}
			} else if raw, err = c.get(cmd.Context(), refdataPath, nil, &all); err != nil {
				return err
			}
			if g.output != "table" {
				return g.show(cmd, raw, nil)
			}
			var vs []refdata.Version
			var kinds []refdata.Kind
			for _, k := range all.Datasets {
				vs = append(vs, k.Versions...)
				kinds = append(kinds, k.Kind)
			}
			if err := g.show(cmd, raw, refTable(vs)); err != nil || !all.clustered() {
				return err
			}
			trailer := ""
			if len(args) == 1 {
				// The one-kind route has no node reports: they are in the
				// full list. Its datasets are not needed again.
				var full refdataList
				if _, err := c.get(cmd.Context(), refdataPath, nil, &full); err != nil {
					trailer = "cluster: the nodes' reports are unavailable: " + err.Error()
				}
				all.ClusterActive, all.Nodes = full.ClusterActive, full.Nodes
			}
			w := cmd.OutOrStdout()
			if trailer != "" {
				_, err := fmt.Fprintf(w, "\n%s\n", trailer)
				return err
			}
			summary, t := convergence(kinds, all.ClusterActive, all.Nodes)
			fmt.Fprintf(w, "\n%s\n", summary)
			return g.painter(cmd).writeTable(w, t)
		},
	}
	act := &cobra.Command{
		Use:     "activate KIND@VERSION",
		Short:   "Make a version the one generic subscriptions match against",
		Example: `  emsctl refdata activate nspl@3`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, ver, ok := strings.Cut(args[0], "@")
			if _, err := strconv.ParseUint(ver, 10, 64); !ok || kind == "" || err != nil {
				return usageErr("version %q: want KIND@N, e.g. nspl@3 (see refdata list)", args[0])
			}
			return refdataChange(cmd, g, refdataPath+"/"+pathEscape(kind)+"/"+ver+"/activate")
		},
	}
	rollback := &cobra.Command{
		Use:       "rollback KIND",
		Short:     "Re-activate the previous version of a dataset",
		Example:   `  emsctl refdata rollback nspl`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: refKinds[:3],
		RunE: func(cmd *cobra.Command, args []string) error {
			return refdataChange(cmd, g, refdataPath+"/"+pathEscape(args[0])+"/rollback")
		},
	}
	cmd.AddCommand(imp, list, act, rollback)
	return cmd
}

func refdataChange(cmd *cobra.Command, g *globals, path string) error {
	c, err := g.admin()
	if err != nil {
		return err
	}
	var v refdata.Version
	raw, err := c.postJSON(cmd.Context(), path, nil, nil, &v)
	if err != nil {
		return err
	}
	return g.show(cmd, raw, refTable([]refdata.Version{v}))
}

// importFailure names the file's line and column when the server says
// where the file is wrong (a 422 with an ImportFailure).
func importFailure(file string, raw []byte, err error) error {
	var f refdata.ImportFailure
	if json.Unmarshal(raw, &f) != nil || f.Line == 0 {
		return err
	}
	at := fmt.Sprintf("%s:%d", file, f.Line)
	if f.Column > 0 {
		at += fmt.Sprintf(":%d", f.Column)
	}
	if f.Name != "" {
		at += " (" + f.Name + ")"
	}
	return &exitError{exitFailure, fmt.Errorf("importing %s: %s", at, f.Error)}
}

// uploadBody gives net/http the length of a wrapped file, so the upload is
// sent with Content-Length rather than chunked.
type uploadBody struct {
	*progress
	size int64
}

func (u uploadBody) Size() int64 { return u.size }
