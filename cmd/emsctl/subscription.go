package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/subscription"
)

const subsPath = "/admin/v1/subscriptions"

func newSubscriptionCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "subscription",
		Aliases: []string{"subscriptions", "sub"},
		Short:   "List, review and change subscriptions",
		Example: `  emsctl subscription list --status active --owner A91234
  emsctl subscription pending
  emsctl subscription get 3f6c0e1a-7d7e-4a52-9d55-0f3c2b7a9e10`,
	}
	cmd.AddCommand(newSubListCmd(g), newSubPendingCmd(g), newSubGetCmd(g), newSubCreateCmd(g), newSubDeleteCmd(g))
	for _, t := range []struct{ action, short, example string }{
		{"approve", "Approve requested subscriptions (requested → active)", "emsctl subscription approve ID --note \"confirmed by phone\""},
		{"reject", "Refuse requested subscriptions (requested → off)", "emsctl subscription reject ID --note \"not a registered service\""},
		{"suspend", "Stop matching for subscriptions (active or error → off)", "emsctl subscription suspend ID1 ID2 --note \"endpoint decommissioned\""},
		{"resume", "Start matching again (off or error → active)", "emsctl subscription resume ID"},
	} {
		cmd.AddCommand(newSubTransitionCmd(g, t.action, t.short, "  "+t.example))
	}
	return cmd
}

// subTable renders subscriptions one per row.
func subTable(subs []*subscription.Subscription) *table {
	t := newTable("ID", "STATUS", "OWNER", "KIND", "TARGET", "EVENTS", "CHANNEL", "ENDPOINT", "CREATED")
	for _, s := range subs {
		target := s.Criteria.NHSNumber
		if s.Criteria.Kind == subscription.Generic {
			target = string(s.Criteria.Rule) + ":" + s.Criteria.Organisation
		}
		t.add(s.ID, string(s.Status), s.Owner, s.Criteria.Kind.String(), target,
			strings.Join(s.Criteria.Events, ","), s.Channel.Type, s.Channel.Endpoint, ts(s.Created))
	}
	return t
}

func newSubListCmd(g *globals) *cobra.Command {
	var f struct {
		status, owner, endpoint, event, nhs, rule, kind, after string
		limit                                                  int
		all                                                    bool
	}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List subscriptions, filtered",
		Example: `  emsctl subscription list
  emsctl subscription list --status error
  emsctl subscription list --nhs 9912003888 --event pds-change-of-address-1
  emsctl subscription list --kind generic --rule GP_GP_GP -o json
  emsctl subscription list --limit 50 --after 3f6c0e1a-...   # next page`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"status": f.status, "owner": f.owner, "endpoint": f.endpoint,
				"event": f.event, "nhs": f.nhs, "rule": f.rule, "kind": f.kind, "after": f.after} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if f.limit > 0 {
				q.Set("limit", strconv.Itoa(f.limit))
			}
			return listSubs(cmd, g, c, subsPath, q, f.all)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.status, "status", "", "requested, active, error or off")
	fl.StringVar(&f.owner, "owner", "", "owning organisation's ODS code")
	fl.StringVar(&f.endpoint, "endpoint", "", "channel endpoint (mailbox id or webhook URL)")
	fl.StringVar(&f.event, "event", "", "event code, e.g. pds-change-of-address-1")
	fl.StringVar(&f.nhs, "nhs", "", "NHS number of explicit subscriptions")
	fl.StringVar(&f.rule, "rule", "", "generic rule type, e.g. GP_GP_GP")
	fl.StringVar(&f.kind, "kind", "", "explicit or generic")
	fl.StringVar(&f.after, "after", "", "start after this id (the previous page's next)")
	fl.IntVar(&f.limit, "limit", 0, "page size, 1 to 1000 (server default 100)")
	fl.BoolVar(&f.all, "all", false, "follow every page")
	_ = cmd.RegisterFlagCompletionFunc("status", fixed("requested", "active", "error", "off"))
	_ = cmd.RegisterFlagCompletionFunc("kind", fixed("explicit", "generic"))
	_ = cmd.RegisterFlagCompletionFunc("rule", fixed("GP_GP_GP", "CHO_GP_CCG", "CHO_POSTCODE_CCG", "UHV_POSTCODE_LACODE", "COUNTRYCODE"))
	return cmd
}

func fixed(values ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

// listSubs fetches one page (or every page with all) and shows it.
func listSubs(cmd *cobra.Command, g *globals, c *client, path string, q url.Values, all bool) error {
	var page subscription.AdminList
	raw, err := c.get(cmd.Context(), path, q, &page)
	if err != nil {
		return err
	}
	for all && page.Next != "" {
		q.Set("after", page.Next)
		var more subscription.AdminList
		if _, err := c.get(cmd.Context(), path, q, &more); err != nil {
			return err
		}
		page.Subscriptions = append(page.Subscriptions, more.Subscriptions...)
		page.Next = more.Next
		raw = mustJSON(page)
	}
	trailer := ""
	if page.Next != "" {
		trailer = "more: --after " + page.Next
	}
	return g.show(cmd, raw, subTable(page.Subscriptions), trailer)
}

func newSubPendingCmd(g *globals) *cobra.Command {
	var limit int
	var after string
	cmd := &cobra.Command{
		Use:   "pending",
		Short: "Show the review queue: requested subscriptions, oldest first",
		Example: `  emsctl subscription pending
  emsctl subscription pending -o json | jq -r '.subscriptions[].id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			q := url.Values{}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			if after != "" {
				q.Set("after", after)
			}
			return listSubs(cmd, g, c, subsPath+"/pending", q, false)
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "page size, 1 to 1000 (server default 100)")
	cmd.Flags().StringVar(&after, "after", "", "start after this id (the previous page's next)")
	return cmd
}

func newSubGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "get ID",
		Aliases: []string{"describe"},
		Short:   "Show one subscription and its history",
		Example: `  emsctl subscription get 3f6c0e1a-7d7e-4a52-9d55-0f3c2b7a9e10
  emsctl subscription get 3f6c0e1a-7d7e-4a52-9d55-0f3c2b7a9e10 -o yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			var d subscription.AdminDetail
			raw, err := c.get(cmd.Context(), subsPath+"/"+pathEscape(args[0]), nil, &d)
			if err != nil {
				return err
			}
			if g.output != "table" {
				return g.show(cmd, raw, nil)
			}
			return describeSub(cmd.OutOrStdout(), g.painter(cmd), &d)
		},
	}
}

// describeSub is the kubectl-describe form: fields, then the history.
func describeSub(w io.Writer, p painter, d *subscription.AdminDetail) error {
	s := d.Subscription
	fields := newTable("FIELD", "VALUE")
	fields.add("id", s.ID)
	fields.add("status", string(s.Status))
	fields.add("owner", s.Owner)
	fields.add("kind", s.Criteria.Kind.String())
	fields.add("criteria", s.CriteriaText)
	fields.add("reason", s.Reason)
	fields.add("channel", s.Channel.Type+" "+s.Channel.Endpoint)
	fields.add("end", s.EndText)
	fields.add("version", strconv.FormatUint(s.VersionID, 10))
	fields.add("created", ts(s.Created))
	fields.add("updated", ts(s.LastUpdated))
	fields.add("created by", s.CreatedBy)
	if err := p.writeTable(w, fields); err != nil {
		return err
	}
	fmt.Fprintln(w)
	h := newTable("VERSION", "AT", "ACTOR", "ACTION", "FROM", "TO", "NOTE")
	for _, e := range d.History {
		h.add(strconv.FormatUint(e.VersionID, 10), ts(e.At), e.Actor, string(e.Action), string(e.From), string(e.To), e.Note)
	}
	return p.writeTable(w, h)
}

// forEachID runs do for every id, reporting each failure on stderr and
// going on; the exit code is the first failure's.
func forEachID(cmd *cobra.Command, ids []string, do func(ctx context.Context, id string) error) error {
	var first error
	failed := 0
	for _, id := range ids {
		if err := do(cmd.Context(), id); err != nil {
			failed++
			if first == nil {
				first = err
			}
			if len(ids) > 1 {
				fmt.Fprintln(cmd.ErrOrStderr(), "emsctl:", err)
			}
		}
	}
	if failed == 0 {
		return nil
	}
	if len(ids) == 1 {
		return first
	}
	code := exitFailure
	var ee *exitError
	if errors.As(first, &ee) {
		code = ee.code
	}
	return &exitError{code, fmt.Errorf("%d of %d failed", failed, len(ids))}
}

func newSubTransitionCmd(g *globals, action, short, example string) *cobra.Command {
	var note string
	cmd := &cobra.Command{
		Use:     action + " ID...",
		Short:   short,
		Example: example,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			var body any
			if note != "" {
				body = map[string]string{"note": note}
			}
			var done []*subscription.Subscription
			err = forEachID(cmd, args, func(ctx context.Context, id string) error {
				var s subscription.Subscription
				if _, err := c.postJSON(ctx, subsPath+"/"+pathEscape(id)+"/"+action, nil, body, &s); err != nil {
					return err
				}
				done = append(done, &s)
				return nil
			})
			if len(done) > 0 {
				if shErr := g.show(cmd, mustJSON(done), subTable(done)); shErr != nil {
					return shErr
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&note, "note", "", "why: kept in the subscription's history and the audit log")
	return cmd
}

func newSubDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "delete ID...",
		Short:   "Delete subscriptions (recorded in the audit log with their last state)",
		Example: `  emsctl subscription delete 3f6c0e1a-7d7e-4a52-9d55-0f3c2b7a9e10`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			var deleted []map[string]string
			err = forEachID(cmd, args, func(ctx context.Context, id string) error {
				var d map[string]string
				if _, err := c.call(ctx, http.MethodDelete, subsPath+"/"+pathEscape(id), nil, nil, "", &d); err != nil {
					return err
				}
				deleted = append(deleted, d)
				return nil
			})
			if len(deleted) > 0 {
				t := newTable("DELETED")
				for _, d := range deleted {
					t.add(d["deleted"])
				}
				if shErr := g.show(cmd, mustJSON(deleted), t); shErr != nil {
					return shErr
				}
			}
			return err
		},
	}
}

func newSubCreateCmd(g *globals) *cobra.Command {
	var file string
	var who callerFlags
	cmd := &cobra.Command{
		Use:   "create -f FILE --asid ASID",
		Short: "Create a subscription from a FHIR Subscription (XML or JSON)",
		Long: `Create a subscription from a FHIR STU3 Subscription resource in XML or JSON,
through the public Subscription API as the subscriber system with the given
ASID: the same checks, registry grants and auto-activation policy apply as for
the subscriber itself. "-f -" reads standard input.`,
		Example: `  emsctl subscription create -f subscription.xml --asid 200000000115
  emsctl subscription create -f generic.json --asid 200000000115 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" || who.asid == "" {
				return usageErr("create needs -f FILE and --asid ASID")
			}
			body, err := readInput(g, file)
			if err != nil {
				return err
			}
			id, warnings, err := createSubscription(cmd.Context(), g, body, &who)
			if err != nil {
				return err
			}
			for _, w := range warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "emsctl: warning:", w)
			}
			if g.token == "" {
				fmt.Fprintln(cmd.OutOrStdout(), id)
				return nil
			}
			c, err := g.admin()
			if err != nil {
				return err
			}
			var d subscription.AdminDetail
			if _, err := c.get(cmd.Context(), subsPath+"/"+pathEscape(id), nil, &d); err != nil {
				return err
			}
			return g.show(cmd, mustJSON(d.Subscription), subTable([]*subscription.Subscription{d.Subscription}))
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "the Subscription resource (XML or JSON), - for stdin")
	who.bind(cmd, "subscriber")
	return cmd
}

func readInput(g *globals, file string) ([]byte, error) {
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(g.stdin)
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, usageErr("reading %s: %w", file, err)
	}
	return b, nil
}

func fhirContentType(body []byte) string {
	if fhir.Sniff(body) == fhir.FormatJSON {
		return "application/fhir+json"
	}
	return "application/fhir+xml"
}

// createSubscription posts to the public API and returns the new id and the
// warnings of a 201 answer.
func createSubscription(ctx context.Context, g *globals, body []byte, who *callerFlags) (string, []string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.public+subscription.PathPrefix, bytes.NewReader(body))
	if err != nil {
		return "", nil, &exitError{exitFailure, err}
	}
	req.Header.Set("Content-Type", fhirContentType(body))
	req.Header.Set("Accept", "application/fhir+json")
	if err := who.apply(req, os.Getenv); err != nil {
		return "", nil, err
	}
	resp, err := (&http.Client{Timeout: g.timeout}).Do(req)
	if err != nil {
		return "", nil, &exitError{exitFailure, fmt.Errorf("creating the subscription: %w", err)}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode != http.StatusCreated {
		code := exitFailure
		if resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnprocessableEntity {
			code = exitUsage
		}
		return "", nil, &exitError{code, fmt.Errorf("creating the subscription: %s: %s", resp.Status, outcomeText(raw))}
	}
	loc := resp.Header.Get("Location")
	id := loc[strings.LastIndex(loc, "/")+1:]
	var warnings []string
	if len(bytes.TrimSpace(raw)) > 0 {
		warnings = append(warnings, outcomeText(raw))
	}
	return id, warnings, nil
}
