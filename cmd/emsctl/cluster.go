package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ems-broker/ems/delivery"
	"github.com/ems-broker/ems/subscription/refdata"
)

// laneRanges shows lane numbers compactly, consecutive ones as a range,
// with their count: "0-5,9,12 (8)". No lanes show as "".
func laneRanges(lanes []int) string {
	ls := slices.Clone(lanes)
	slices.Sort(ls)
	ls = slices.Compact(ls)
	if len(ls) == 0 {
		return ""
	}
	var b strings.Builder
	for i := 0; i < len(ls); {
		j := i
		for j+1 < len(ls) && ls[j+1] == ls[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(ls[i]))
		if j > i {
			b.WriteString("-" + strconv.Itoa(ls[j]))
		}
		i = j + 1
	}
	fmt.Fprintf(&b, " (%d)", len(ls))
	return b.String()
}

// laneWarnings names the webhook lanes no live node works: those whose
// lease nobody holds (their jobs wait until a node takes it, at most the
// lease TTL after a node stops) and those held by a node missing from the
// heartbeat list (a node that stopped reporting, or whose lease outlived
// it). A lane the server's map leaves out counts as held by nobody, so
// the warnings hold even for a partial answer.
func laneWarnings(lanes map[string][]int, nodes []string) []string {
	seen := map[int]bool{}
	for _, ls := range lanes {
		for _, l := range ls {
			seen[l] = true
		}
	}
	unheld := slices.Clone(lanes[""])
	for l := range delivery.LaneCount {
		if !seen[l] {
			unheld = append(unheld, l)
		}
	}
	var out []string
	if len(unheld) > 0 {
		out = append(out, "warning: lanes "+laneRanges(unheld)+" held by no node: their webhook jobs wait until a node takes the lease")
	}
	var strangers []string
	for n := range lanes {
		if n != "" && !slices.Contains(nodes, n) {
			strangers = append(strangers, n)
		}
	}
	slices.Sort(strangers)
	for _, n := range strangers {
		out = append(out, fmt.Sprintf("warning: lanes %s held by %s, which is not in the node list: if it died, its lease expires within the TTL",
			laneRanges(lanes[n]), n))
	}
	return out
}

// refdataList mirrors GET /admin/v1/refdata.
type refdataList struct {
	Datasets []refdata.KindVersions `json:"datasets"`
	Active   string                 `json:"active"`
	// Cluster mode only: the cluster's active versions and every node's
	// report of what it has loaded.
	ClusterActive string               `json:"clusterActive"`
	Nodes         []refdata.NodeLoaded `json:"nodes"`
}

// clustered tells whether the answer came from a node in cluster mode: a
// kind with the cluster's versions, or a node's report.
func (l *refdataList) clustered() bool {
	if len(l.Nodes) > 0 {
		return true
	}
	for _, k := range l.Datasets {
		if k.Cluster != nil {
			return true
		}
	}
	return false
}

// parseLabel splits a versions label ("nspl@3,subicb@1", as Store.Label
// and NodeLoaded write it) into kind → version; kinds without an active
// version are absent.
func parseLabel(label string) map[refdata.Kind]string {
	out := map[refdata.Kind]string{}
	for part := range strings.SplitSeq(label, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(part), "@"); ok && k != "" {
			out[refdata.Kind(k)] = v
		}
	}
	return out
}

// nodeState sums up one node's report: failing (a load failed and is being
// retried), loading, converged (it matches with the cluster's active
// versions) or behind (none of these yet: its next report will say).
func nodeState(n refdata.NodeLoaded) string {
	switch {
	case n.Error != "":
		return "failing"
	case n.Loading != "":
		return "loading"
	case n.Converged:
		return "converged"
	}
	return "behind"
}

// convergence renders which nodes hold the cluster's active version of each
// of kinds: a summary line and a table of one row per node, with a column
// per kind. A kind cell is the node's active version, followed by the
// cluster's when they differ ("nspl@2, cluster @3"; "none" for no version).
func convergence(kinds []refdata.Kind, clusterActive string, nodes []refdata.NodeLoaded) (string, *table) {
	want := parseLabel(clusterActive)
	header := []string{"NODE", "STATE"}
	for _, k := range kinds {
		header = append(header, strings.ToUpper(string(k)))
	}
	t := newTable(append(header, "LOADING", "UPDATED", "ERROR")...)
	converged := 0
	for _, n := range nodes {
		st := nodeState(n)
		if st == "converged" {
			converged++
		}
		has := parseLabel(n.Active)
		row := []string{n.Node, st}
		for _, k := range kinds {
			row = append(row, kindCell(k, has[k], want[k]))
		}
		t.add(append(row, n.Loading, ts(n.Updated), n.Error)...)
	}
	active := clusterActive
	if active == "" {
		active = "none"
	}
	return fmt.Sprintf("cluster: active %s; %d of %d nodes converged", active, converged, len(nodes)), t
}

func kindCell(k refdata.Kind, has, want string) string {
	label := func(v string) string {
		if v == "" {
			return "none"
		}
		return string(k) + "@" + v
	}
	if has == want {
		return label(has)
	}
	if want == "" {
		return label(has) + ", cluster none"
	}
	return label(has) + ", cluster @" + want
}
