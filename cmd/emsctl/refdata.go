package main

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

const refdataPath = "/admin/v1/refdata"

// refVersion is one imported reference-data version.
type refVersion struct {
	Version    string    `json:"version"`
	Kind       string    `json:"kind"`
	Rows       int64     `json:"rows"`
	Rejected   int64     `json:"rejected,omitempty"`
	State      string    `json:"state,omitempty"` // staged, active, retired
	Active     bool      `json:"active"`
	ImportedAt time.Time `json:"importedAt,omitzero"`
	Operator   string    `json:"operator,omitempty"`
	Source     string    `json:"source,omitempty"`
}

func refTable(vs []refVersion) *table {
	t := newTable("VERSION", "KIND", "ROWS", "REJECTED", "ACTIVE", "IMPORTED", "BY", "SOURCE")
	for _, v := range vs {
		active := "no"
		if v.Active {
			active = "yes"
		}
		t.add(v.Version, v.Kind, strconv.FormatInt(v.Rows, 10), strconv.FormatInt(v.Rejected, 10), active,
			ts(v.ImportedAt), v.Operator, v.Source)
	}
	return t
}

func newRefdataCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "refdata",
		Short: "Import and activate reference data for generic subscriptions",
		Long: `Reference data (ONS postcode directory, sub-ICB lookups, ODS GP practices)
lets generic subscriptions match by GP practice, sub-ICB, local authority or
country. An import stages a new version; activating it switches matching to it
at once, and the previous version stays for rollback.`,
		Example: `  emsctl refdata import postcode ONSPD_NOV_2026_UK.csv
  emsctl refdata list
  emsctl refdata activate postcode-20261122T101500Z`,
	}
	var activate bool
	imp := &cobra.Command{
		Use:   "import KIND FILE",
		Short: "Upload a reference-data file as a new staged version",
		Long: `Stream a reference-data file to the server as a new version of KIND. On a
terminal a progress bar shows the rows sent, rows per second and the time left;
otherwise emsctl prints only the result.`,
		Example: `  emsctl refdata import postcode ONSPD_NOV_2026_UK.csv
  emsctl refdata import gp-practice epraccur.csv --activate`,
		Args: cobra.ExactArgs(2),
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
			q := url.Values{"source": {st.Name()}}
			if activate {
				q.Set("activate", "true")
			}
			// An import of a national file takes minutes: no time limit
			// beyond the operator's ^C.
			uc := *c
			uc.http = &http.Client{}
			req := uploadBody{p, st.Size()}
			var v refVersion
			raw, err := uc.call(context.WithoutCancel(cmd.Context()), http.MethodPost,
				refdataPath+"/"+pathEscape(args[0])+"/import", q, req, "text/csv", &v)
			p.finish()
			if err != nil {
				return err
			}
			return g.show(cmd, raw, refTable([]refVersion{v}))
		},
	}
	imp.Flags().BoolVar(&activate, "activate", false, "activate the version when the import completes")
	list := &cobra.Command{
		Use:     "list",
		Short:   "List reference-data versions",
		Example: `  emsctl refdata list`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			var page struct {
				Versions []refVersion `json:"versions"`
			}
			raw, err := c.get(cmd.Context(), refdataPath, nil, &page)
			if err != nil {
				return err
			}
			return g.show(cmd, raw, refTable(page.Versions))
		},
	}
	act := &cobra.Command{
		Use:     "activate VERSION",
		Short:   "Make a version the one generic subscriptions match against",
		Example: `  emsctl refdata activate postcode-20261122T101500Z`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			var v refVersion
			raw, err := c.postJSON(cmd.Context(), refdataPath+"/versions/"+pathEscape(args[0])+"/activate", nil, nil, &v)
			if err != nil {
				return err
			}
			return g.show(cmd, raw, refTable([]refVersion{v}))
		},
	}
	cmd.AddCommand(imp, list, act)
	return cmd
}

// uploadBody gives net/http the length of a wrapped file, so the upload is
// sent with Content-Length rather than chunked.
type uploadBody struct {
	*progress
	size int64
}

func (u uploadBody) Size() int64 { return u.size }
