package main

import (
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/ems-broker/ems/admin"
)

// serviceStatus mirrors GET /admin/v1/status.
type serviceStatus struct {
	Version       string    `json:"version"`
	Started       time.Time `json:"started"`
	UptimeSeconds int64     `json:"uptimeSeconds"`
	JetStream     struct {
		OK        bool   `json:"ok"`
		Error     string `json:"error"`
		Memory    uint64 `json:"memoryBytes"`
		Store     uint64 `json:"storeBytes"`
		Streams   int    `json:"streams"`
		Consumers int    `json:"consumers"`
	} `json:"jetstream"`
	Streams []struct {
		Name      string `json:"name"`
		Messages  uint64 `json:"messages"`
		Bytes     uint64 `json:"bytes"`
		FirstSeq  uint64 `json:"firstSeq"`
		LastSeq   uint64 `json:"lastSeq"`
		Consumers int    `json:"consumers"`
	} `json:"streams"`
	Consumers []struct {
		Stream      string `json:"stream"`
		Name        string `json:"name"`
		Pending     uint64 `json:"pending"`
		AckPending  int    `json:"ackPending"`
		Redelivered int    `json:"redelivered"`
	} `json:"consumers"`
	Inboxes []struct {
		Mailbox  string `json:"mailbox"`
		Messages uint64 `json:"messages"`
	} `json:"inboxes"`
	DeadLetters uint64 `json:"deadLetters"`
	// Cluster is present when emsd runs in cluster mode (docs/cluster.md).
	Cluster *struct {
		Node string `json:"node"`
		NATS struct {
			ConnectedServer string `json:"connectedServer"`
			Cluster         string `json:"cluster"`
		} `json:"nats"`
		ChangeLog struct {
			Stream  string `json:"stream"`
			LastSeq uint64 `json:"lastSeq"`
		} `json:"changeLog"`
		Nodes []struct {
			Name       string    `json:"name"`
			Applied    uint64    `json:"applied"`
			Lag        uint64    `json:"lag"`
			LastSeen   time.Time `json:"lastSeen"`
			NATSServer string    `json:"natsServer"`
			Error      string    `json:"error"`
		} `json:"nodes"`
		// Lanes are the webhook lanes each node holds (node → lanes;
		// "" = held by nobody). Nil from a server before lanes; empty
		// when the server could not read the lease bucket.
		Lanes map[string][]int `json:"lanes"`
	} `json:"cluster"`
}

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the service's health: JetStream, streams, consumer lag, inboxes, dead letters, cluster nodes and lanes",
		Example: `  emsctl status
  emsctl status -o json | jq .deadLetters`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			var st serviceStatus
			raw, err := c.get(cmd.Context(), "/admin/v1/status", nil, &st)
			if err != nil {
				return err
			}
			if g.output != "table" {
				return g.show(cmd, raw, nil)
			}
			return describeStatus(cmd.OutOrStdout(), g.painter(cmd), &st)
		},
	}
}

func describeStatus(w io.Writer, p painter, st *serviceStatus) error {
	js := "ok"
	if !st.JetStream.OK {
		js = "error: " + st.JetStream.Error
	}
	f := newTable("FIELD", "VALUE")
	f.add("version", st.Version)
	f.add("started", ts(st.Started))
	f.add("uptime", (time.Duration(st.UptimeSeconds) * time.Second).String())
	f.add("jetstream", js)
	f.add("jetstream memory", bytesText(st.JetStream.Memory))
	f.add("jetstream store", bytesText(st.JetStream.Store))
	f.add("dead letters", strconv.FormatUint(st.DeadLetters, 10))
	if err := p.writeTable(w, f); err != nil {
		return err
	}
	fmt.Fprintln(w)
	s := newTable("STREAM", "MESSAGES", "BYTES", "FIRST", "LAST", "CONSUMERS")
	for _, x := range st.Streams {
		s.add(x.Name, strconv.FormatUint(x.Messages, 10), bytesText(x.Bytes), strconv.FormatUint(x.FirstSeq, 10),
			strconv.FormatUint(x.LastSeq, 10), strconv.Itoa(x.Consumers))
	}
	if err := p.writeTable(w, s); err != nil {
		return err
	}
	fmt.Fprintln(w)
	c := newTable("STREAM", "CONSUMER", "PENDING", "ACK PENDING", "REDELIVERED")
	for _, x := range st.Consumers {
		c.add(x.Stream, x.Name, strconv.FormatUint(x.Pending, 10), strconv.Itoa(x.AckPending), strconv.Itoa(x.Redelivered))
	}
	if err := p.writeTable(w, c); err != nil {
		return err
	}
	fmt.Fprintln(w)
	in := newTable("MAILBOX", "MESSAGES")
	for _, x := range st.Inboxes {
		in.add(x.Mailbox, strconv.FormatUint(x.Messages, 10))
	}
	if err := p.writeTable(w, in); err != nil || st.Cluster == nil {
		return err
	}
	k := st.Cluster
	fmt.Fprintf(w, "\ncluster: this node %s, NATS server %s of cluster %s, change log %s at %d\n",
		k.Node, k.NATS.ConnectedServer, k.NATS.Cluster, k.ChangeLog.Stream, k.ChangeLog.LastSeq)
	// The LANES column only when the server reports lanes: a server from
	// before lanes sends none, and that is not a fault to flag.
	withLanes := k.Lanes != nil
	n := newTable("NODE", "APPLIED", "LAG", "NATS SERVER", "LAST SEEN", "ERROR")
	if withLanes {
		n = newTable("NODE", "APPLIED", "LAG", "LANES", "NATS SERVER", "LAST SEEN", "ERROR")
	}
	names := make([]string, 0, len(k.Nodes))
	for _, x := range k.Nodes {
		names = append(names, x.Name)
		row := []string{x.Name, strconv.FormatUint(x.Applied, 10), strconv.FormatUint(x.Lag, 10)}
		if withLanes {
			row = append(row, laneRanges(k.Lanes[x.Name]))
		}
		n.add(append(row, x.NATSServer, ts(x.LastSeen), x.Error)...)
	}
	if err := p.writeTable(w, n); err != nil || !withLanes {
		return err
	}
	if len(k.Lanes) == 0 {
		// emsd answers {} when it cannot read the lease bucket.
		_, err := fmt.Fprintln(w, "warning: lanes unknown: the server could not read the webhook lane leases")
		return err
	}
	for _, l := range laneWarnings(k.Lanes, names) {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	return nil
}

// bytesText shows a size in binary units.
func bytesText(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + "B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read the admin API's audit log",
		Example: `  emsctl audit list --since 24h
  emsctl audit list --operator alice -o json`,
	}
	var since sinceFlag
	var operator string
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List audited calls, newest first",
		Long: `List the admin API's audit log, newest first: every mutating call with the
operator, the target, the answer's status, and (with -o json or yaml) the
target's state before and after the change.`,
		Example: `  emsctl audit list
  emsctl audit list --since 2026-11-22T09:00:00Z --operator alice
  emsctl audit list --limit 1 -o json | jq '.entries[0].before'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.admin()
			if err != nil {
				return err
			}
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			if !since.t.IsZero() {
				q.Set("since", since.t.UTC().Format(time.RFC3339))
			}
			if operator != "" {
				q.Set("operator", operator)
			}
			var page struct {
				Entries []admin.Entry `json:"entries"`
			}
			raw, err := c.get(cmd.Context(), "/admin/v1/audit", q, &page)
			if err != nil {
				return err
			}
			t := newTable("SEQ", "TIME", "OPERATOR", "METHOD", "PATH", "STATUS")
			for _, e := range page.Entries {
				path := e.Path
				if e.Query != "" {
					path += "?" + e.Query
				}
				t.add(strconv.FormatUint(e.Seq, 10), ts(e.Time), e.Operator, e.Method, path, strconv.Itoa(e.Status))
			}
			return g.show(cmd, raw, t)
		},
	}
	list.Flags().Var(&since, "since", "only entries at or after this time (RFC 3339, or a duration such as 24h)")
	list.Flags().StringVar(&operator, "operator", "", "only this operator's calls (the token's name)")
	list.Flags().IntVar(&limit, "limit", 100, "at most this many, 1 to 10000")
	cmd.AddCommand(list)
	return cmd
}
