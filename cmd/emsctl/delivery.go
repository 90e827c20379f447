package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ems-broker/ems/delivery"
)

const (
	deliveriesPath  = "/admin/v1/deliveries"
	deadLettersPath = "/admin/v1/dead-letters"
	replayPath      = "/admin/v1/dead-letters/replay"
	breakersPath    = "/admin/v1/breakers"
	// everything is the limit that asks the server for every match; the
	// delivery routes apply their default page of 100 otherwise.
	everything = "1000000"
)

// sinceFlag parses --since as an RFC 3339 time or a duration back from now.
type sinceFlag struct{ t time.Time }

func (s *sinceFlag) String() string {
	if s.t.IsZero() {
		return ""
	}
	return s.t.Format(time.RFC3339)
}

func (s *sinceFlag) Set(v string) error {
	if d, err := time.ParseDuration(v); err == nil {
		s.t = time.Now().Add(-d)
		return nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return fmt.Errorf("want an RFC 3339 time (2026-11-22T10:00:00Z) or a duration back from now (2h)")
	}
	s.t = t
	return nil
}

func (s *sinceFlag) Type() string { return "time|duration" }

// deliveryFilter is the filter shared by the delivery and dead-letter
// commands.
type deliveryFilter struct {
	endpoint, event, nhs, state, channel string
	since                                sinceFlag
	limit                                int
}

func (f *deliveryFilter) bind(cmd *cobra.Command, withState bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.endpoint, "endpoint", "", "endpoint (mailbox id or webhook URL)")
	fl.StringVar(&f.event, "event", "", "event id (MessageHeader.id)")
	fl.StringVar(&f.nhs, "nhs", "", "patient's NHS number")
	fl.Var(&f.since, "since", "only those at or after this time (RFC 3339, or a duration such as 2h)")
	fl.IntVar(&f.limit, "limit", 100, "at most this many")
	if withState {
		fl.StringVar(&f.state, "state", "", "pending, retrying, delivered or dead")
		fl.StringVar(&f.channel, "channel", "", "message (MESH) or rest-hook")
		_ = cmd.RegisterFlagCompletionFunc("state", fixed(delivery.StatePending, delivery.StateRetrying, delivery.StateDelivered, delivery.StateDead))
		_ = cmd.RegisterFlagCompletionFunc("channel", fixed("message", "rest-hook"))
	}
}

// query is the filter as the delivery routes take it. since goes to the
// second, rounded down, so that the bound stays inclusive.
func (f *deliveryFilter) query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"endpoint": f.endpoint, "event": f.event, "nhs": f.nhs, "state": f.state, "channel": f.channel} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !f.since.t.IsZero() {
		q.Set("since", f.since.t.UTC().Truncate(time.Second).Format(time.RFC3339))
	}
	q.Set("limit", strconv.Itoa(f.limit))
	return q
}

func newDeliveryCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "delivery",
		Aliases: []string{"deliveries"},
		Short:   "Inspect deliveries: one per event and endpoint",
		Example: `  emsctl delivery list --state retrying
  emsctl delivery get 3d4893bb-23f9-438d-acc4-1d692315e134.a9b1d74f32820321`,
	}
	cmd.AddCommand(newDeliveryListCmd(g), newDeliveryGetCmd(g))
	return cmd
}

func newDeliveryListCmd(g *globals) *cobra.Command {
	var f deliveryFilter
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List deliveries, newest first",
		Example: `  emsctl delivery list
  emsctl delivery list --state dead --endpoint https://hooks.example.org/ems
  emsctl delivery list --nhs 9912003888 --since 24h -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			var page struct {
				Deliveries []*delivery.Record `json:"deliveries"`
			}
			raw, err := c.get(cmd.Context(), deliveriesPath, f.query(), &page)
			if err != nil {
				return err
			}
			if !f.since.t.IsZero() {
				var keep []*delivery.Record
				for _, r := range page.Deliveries {
					if !r.Created.Before(f.since.t) && len(keep) < f.limit {
						keep = append(keep, r)
					}
				}
				page.Deliveries = keep
				if page.Deliveries == nil {
					page.Deliveries = []*delivery.Record{}
				}
				raw = mustJSON(page)
			}
			t := newTable("ID", "STATE", "EVENT", "NHS", "CHANNEL", "ENDPOINT", "ATTEMPTS", "LAST", "UPDATED")
			for _, r := range page.Deliveries {
				t.add(r.ID, r.State, r.EventCode, r.NHSNumber, r.Channel, r.Endpoint,
					strconv.Itoa(r.TotalAttempts), lastOutcome(r.LastStatus, r.LastError), ts(r.Updated))
			}
			return g.show(cmd, raw, t)
		},
	}
	f.bind(cmd, true)
	return cmd
}

// lastOutcome is a short form of an attempt's result.
func lastOutcome(status int, err string) string {
	switch {
	case status != 0:
		return strconv.Itoa(status)
	case err != "":
		// Go's client errors start by repeating the method and URL,
		// which the endpoint column already shows.
		if rest, ok := strings.CutPrefix(err, "Post \""); ok {
			if _, after, ok := strings.Cut(rest, "\": "); ok {
				err = after
			}
		}
		if len(err) > 50 {
			err = err[:50] + "..."
		}
		return err
	}
	return ""
}

func newDeliveryGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "get ID",
		Aliases: []string{"describe"},
		Short:   "Show one delivery: why it matched and every attempt",
		Long: `Show one delivery: the subscriptions that matched the event and why (kind,
rule and the organisation the rule matched), then every attempt with its
status code, error and latency. The ID is the one delivery list shows.`,
		Example: `  emsctl delivery get 3d4893bb-23f9-438d-acc4-1d692315e134.a9b1d74f32820321
  emsctl delivery get 20261122194430051091_5c8e90d87d -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			var r delivery.Record
			raw, err := c.get(cmd.Context(), deliveriesPath+"/"+pathEscape(args[0]), nil, &r)
			if err != nil {
				return err
			}
			if g.output != "table" {
				return g.show(cmd, raw, nil)
			}
			return describeDelivery(cmd.OutOrStdout(), g.painter(cmd), &r)
		},
	}
}

func describeDelivery(w io.Writer, p painter, r *delivery.Record) error {
	f := newTable("FIELD", "VALUE")
	f.add("id", r.ID)
	f.add("state", r.State)
	f.add("event", r.EventCode)
	f.add("event id", r.EventID)
	f.add("nhs number", r.NHSNumber)
	f.add("channel", r.Channel)
	f.add("endpoint", r.Endpoint)
	f.add("generation", strconv.Itoa(r.Generation))
	f.add("attempts", fmt.Sprintf("%d (%d in this generation)", r.TotalAttempts, r.AttemptCount))
	f.add("next attempt", ts(r.NextAttempt))
	f.add("last status", lastOutcome(r.LastStatus, ""))
	f.add("last error", r.LastError)
	f.add("reason", r.Reason)
	f.add("created", ts(r.Created))
	f.add("updated", ts(r.Updated))
	if err := p.writeTable(w, f); err != nil {
		return err
	}
	fmt.Fprintln(w)
	m := newTable("SUBSCRIPTION", "KIND", "RULE", "ORGANISATION", "TAG")
	for _, x := range r.Matches {
		m.add(x.Subscription, x.Kind, x.Rule, x.Organisation, x.Tag)
	}
	if err := p.writeTable(w, m); err != nil {
		return err
	}
	fmt.Fprintln(w)
	a := newTable("AT", "GENERATION", "OUTCOME", "STATUS", "LATENCY", "ERROR")
	for _, x := range r.Attempts {
		a.add(ts(x.At), strconv.Itoa(x.Generation), x.Outcome, lastOutcome(x.Status, ""),
			strconv.FormatFloat(x.LatencyMs, 'f', 0, 64)+"ms", x.Error)
	}
	return p.writeTable(w, a)
}

func newDeadLetterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "deadletter",
		Aliases: []string{"deadletters", "dead-letter", "dlq"},
		Short:   "Inspect deliveries that gave up",
		Example: `  emsctl deadletter list --endpoint https://hooks.example.org/ems`,
	}
	var f deliveryFilter
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters, oldest first",
		Example: `  emsctl deadletter list
  emsctl deadletter list --endpoint https://hooks.example.org/ems --since 2h
  emsctl deadletter list --nhs 9912003888 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			dls, raw, err := deadLetters(cmd.Context(), c, &f)
			if err != nil {
				return err
			}
			t := newTable("JOB", "EVENT ID", "NHS", "ENDPOINT", "REASON", "LAST", "ATTEMPTS", "AT")
			for _, d := range dls {
				t.add(d.JobID, d.EventID, d.NHS, d.Endpoint, d.Reason, lastOutcome(d.Status, d.Error), strconv.Itoa(d.Attempts), ts(d.At))
			}
			return g.show(cmd, raw, t)
		},
	}
	f.bind(list, false)
	cmd.AddCommand(list)
	return cmd
}

// deadLetters lists the dead letters f selects, applying --since here.
func deadLetters(ctx context.Context, c *client, f *deliveryFilter) ([]delivery.DeadLetter, []byte, error) {
	var page struct {
		DeadLetters []delivery.DeadLetter `json:"deadLetters"`
	}
	raw, err := c.get(ctx, deadLettersPath, f.query(), &page)
	if err != nil {
		return nil, nil, err
	}
	if f.since.t.IsZero() && page.DeadLetters != nil {
		return page.DeadLetters, raw, nil
	}
	keep := []delivery.DeadLetter{}
	for _, d := range page.DeadLetters {
		if !d.At.Before(f.since.t) && len(keep) < f.limit {
			keep = append(keep, d)
		}
	}
	page.DeadLetters = keep
	return keep, mustJSON(page), nil
}

// replayResult is the replay route's answer.
type replayResult struct {
	Replayed []string          `json:"replayed"`
	Refused  map[string]string `json:"refused"`
}

func newReplayCmd(g *globals) *cobra.Command {
	var f deliveryFilter
	var yes bool
	cmd := &cobra.Command{
		Use:   "replay [JOB...]",
		Short: "Deliver dead letters again",
		Long: `Put dead letters back on the delivery queue as a new generation of their job.
Only the subscriptions still active and within their end date are kept; a dead
letter none of whose subscriptions qualifies is refused and stays dead.

With JOB ids, those dead letters are replayed. With filters (--endpoint,
--event, --nhs, --since) every dead letter they select is: emsctl counts them
and asks for confirmation first, unless --yes is given. Without a terminal to
ask on, --yes is required.`,
		Example: `  emsctl replay 3d4893bb-23f9-438d-acc4-1d692315e134.a9b1d74f32820321
  emsctl replay --endpoint https://hooks.example.org/ems --since 2026-11-22T09:00:00Z
  emsctl replay --endpoint MBA01 --nhs 9912003888 --yes -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			bulk := f.endpoint != "" || f.event != "" || f.nhs != "" || !f.since.t.IsZero()
			if len(args) > 0 && bulk {
				return usageErr("give JOB ids or filters, not both")
			}
			if len(args) == 0 && !bulk {
				return usageErr("give JOB ids or at least one of --endpoint, --event, --nhs, --since")
			}
			c, err := g.admin()
			if err != nil {
				return err
			}
			ids := args
			if bulk {
				f.limit = 1 << 30
				dls, _, err := deadLetters(cmd.Context(), c, &f)
				if err != nil {
					return err
				}
				if len(dls) == 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "no dead letters match")
					return g.show(cmd, mustJSON(replayResult{Replayed: []string{}, Refused: map[string]string{}}), newTable("JOB", "RESULT"))
				}
				if !yes {
					ok, err := confirm(cmd, g, fmt.Sprintf("Replay %d dead letters? [y/N] ", len(dls)))
					if err != nil {
						return err
					}
					if !ok {
						return &exitError{exitFailure, fmt.Errorf("replay cancelled")}
					}
				}
				ids = ids[:0:0]
				for _, d := range dls {
					ids = append(ids, d.JobID)
				}
			}
			res := replayResult{Replayed: []string{}, Refused: map[string]string{}}
			err = forEachID(cmd, ids, func(ctx context.Context, id string) error {
				var r replayResult
				raw, err := c.postJSON(ctx, replayPath, url.Values{"job": {id}}, nil, &r)
				if err != nil {
					_ = json.Unmarshal(raw, &r) // a 409 still says why
				}
				res.Replayed = append(res.Replayed, r.Replayed...)
				for k, v := range r.Refused {
					res.Refused[k] = v
				}
				if err != nil && len(r.Refused) > 0 {
					// The refusal is shown in the table; keep the exit code.
					return &exitError{exitFailure, fmt.Errorf("replaying %s: refused", id)}
				}
				return err
			})
			t := newTable("JOB", "RESULT")
			for _, id := range res.Replayed {
				t.add(id, "replayed")
			}
			refused := make([]string, 0, len(res.Refused))
			for id := range res.Refused {
				refused = append(refused, id)
			}
			sort.Strings(refused)
			for _, id := range refused {
				t.add(id, "refused: "+res.Refused[id])
			}
			if len(res.Replayed)+len(res.Refused) > 0 {
				if shErr := g.show(cmd, mustJSON(res), t); shErr != nil {
					return shErr
				}
			}
			return err
		},
	}
	f.bind(cmd, false)
	cmd.Flags().Lookup("limit").Hidden = true
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

// confirm asks on the terminal; without one it refuses rather than guess.
func confirm(cmd *cobra.Command, g *globals, prompt string) (bool, error) {
	if !isTerminal(g.stdin) {
		return false, usageErr("%sstandard input is not a terminal: pass --yes to confirm", strings.TrimSuffix(prompt, "[y/N] "))
	}
	fmt.Fprint(cmd.ErrOrStderr(), prompt)
	line, err := bufio.NewReader(g.stdin).ReadString('\n')
	if err != nil && line == "" {
		return false, nil
	}
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes", nil
}
