package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ems-broker/ems/subscription/refdata"
)

func TestLaneRanges(t *testing.T) {
	for _, tc := range []struct {
		in   []int
		want string
	}{
		{nil, ""},
		{[]int{7}, "7 (1)"},
		{[]int{0, 1, 2, 3, 4, 5, 9, 12}, "0-5,9,12 (8)"},
		{[]int{12, 9, 5, 4, 3, 2, 1, 0}, "0-5,9,12 (8)"}, // any order
		{[]int{3, 3, 4}, "3-4 (2)"},                      // duplicates count once
		{[]int{1, 3, 5}, "1,3,5 (3)"},
		{[]int{30, 31, 0}, "0,30-31 (3)"},
	} {
		if got := laneRanges(tc.in); got != tc.want {
			t.Errorf("laneRanges(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
	all := make([]int, 32)
	for i := range all {
		all[i] = i
	}
	if got := laneRanges(all); got != "0-31 (32)" {
		t.Errorf("every lane: %q", got)
	}
}

func TestLaneWarnings(t *testing.T) {
	seq := func(from, to int) []int {
		var out []int
		for i := from; i <= to; i++ {
			out = append(out, i)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		lanes map[string][]int
		nodes []string
		want  []string
	}{
		{"all held by listed nodes", map[string][]int{"a": seq(0, 15), "b": seq(16, 31)}, []string{"a", "b"}, nil},
		{"nobody and a stranger", map[string][]int{"a": seq(0, 15), "": {16, 17, 20}, "c": seq(21, 31), "b": {18, 19}}, []string{"a", "b"}, []string{
			"warning: lanes 16-17,20 (3) held by no node: their webhook jobs wait until a node takes the lease",
			"warning: lanes 21-31 (11) held by c, which is not in the node list: if it died, its lease expires within the TTL",
		}},
		// A lane missing from the answer is held by nobody as far as we know.
		{"lanes left out", map[string][]int{"a": seq(2, 31)}, []string{"a"}, []string{
			"warning: lanes 0-1 (2) held by no node: their webhook jobs wait until a node takes the lease",
		}},
	} {
		got := laneWarnings(tc.lanes, tc.nodes)
		if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("%s:\ngot  %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

// statusJSON is a GET /admin/v1/status answer of node a in a cluster of a
// and b, where a dead node c still holds lanes 30-31 and nobody 28-29.
const statusJSON = `{
  "version": "1.4.0", "started": "2026-11-22T10:00:00Z", "uptimeSeconds": 3600,
  "jetstream": {"ok": true, "memoryBytes": 0, "storeBytes": 2048, "streams": 1, "consumers": 1},
  "streams": [{"name": "EMS_EVENTS", "messages": 3, "bytes": 2048, "firstSeq": 1, "lastSeq": 3, "consumers": 1}],
  "consumers": [{"stream": "EMS_EVENTS", "name": "ems-delivery-fanout", "pending": 0, "ackPending": 0, "redelivered": 0}],
  "inboxes": [], "deadLetters": 0,
  "cluster": {
    "node": "a",
    "nats": {"connectedUrl": "nats://127.0.0.1:4222", "connectedServer": "n0", "cluster": "ems", "knownServers": [], "rttMicros": 120},
    "changeLog": {"stream": "EMS_CHANGES", "firstSeq": 1, "lastSeq": 42},
    "nodes": [
      {"name": "a", "applied": 42, "lag": 0, "started": "2026-11-22T10:00:00Z", "lastSeen": "2026-11-22T11:00:00Z", "natsServer": "n0"},
      {"name": "b", "applied": 40, "lag": 2, "started": "2026-11-22T10:00:01Z", "lastSeen": "2026-11-22T11:00:01Z", "natsServer": "n1"}
    ],
    "streams": [],
    "lanes": {"a": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15], "b": [16,17,18,19,20,21,22,23,24,25,26,27], "": [28,29], "c": [30,31]}
  }
}`

const statusHead = `FIELD             VALUE
version           1.4.0
started           2026-11-22T10:00:00Z
uptime            1h0m0s
jetstream         ok
jetstream memory  0B
jetstream store   2.0KiB
dead letters      0

STREAM      MESSAGES  BYTES   FIRST  LAST  CONSUMERS
EMS_EVENTS  3         2.0KiB  1      3     1

STREAM      CONSUMER             PENDING  ACK PENDING  REDELIVERED
EMS_EVENTS  ems-delivery-fanout  0        0            0

MAILBOX  MESSAGES
`

func TestDescribeStatus(t *testing.T) {
	var single map[string]any
	if err := json.Unmarshal([]byte(statusJSON), &single); err != nil {
		t.Fatal(err)
	}
	delete(single, "cluster")
	singleJSON, _ := json.Marshal(single)
	withLanes := func(lanes string) string {
		return strings.Replace(statusJSON, `"lanes": {"a": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15], "b": [16,17,18,19,20,21,22,23,24,25,26,27], "": [28,29], "c": [30,31]}`, lanes, 1)
	}
	clusterLine := "\ncluster: this node a, NATS server n0 of cluster ems, change log EMS_CHANGES at 42\n"
	for _, tc := range []struct {
		name, in, want string
	}{
		// One node: no cluster section at all.
		{"single node", string(singleJSON), statusHead},
		{"cluster", statusJSON, statusHead + clusterLine +
			`NODE  APPLIED  LAG  LANES           NATS SERVER  LAST SEEN             ERROR
a     42       0    0-15 (16)       n0           2026-11-22T11:00:00Z  -
b     40       2    16-27 (12)      n1           2026-11-22T11:00:01Z  -
warning: lanes 28-29 (2) held by no node: their webhook jobs wait until a node takes the lease
warning: lanes 30-31 (2) held by c, which is not in the node list: if it died, its lease expires within the TTL
`},
		{"every lane held", withLanes(`"lanes": {"a": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,28,29,30,31], "b": [16,17,18,19,20,21,22,23,24,25,26,27]}`),
			statusHead + clusterLine +
				`NODE  APPLIED  LAG  LANES                 NATS SERVER  LAST SEEN             ERROR
a     42       0    0-15,28-31 (20)       n0           2026-11-22T11:00:00Z  -
b     40       2    16-27 (12)            n1           2026-11-22T11:00:01Z  -
`},
		{"lease bucket unreadable", withLanes(`"lanes": {}`), statusHead + clusterLine +
			`NODE  APPLIED  LAG  LANES  NATS SERVER  LAST SEEN             ERROR
a     42       0    -      n0           2026-11-22T11:00:00Z  -
b     40       2    -      n1           2026-11-22T11:00:01Z  -
warning: lanes unknown: the server could not read the webhook lane leases
`},
		// A server from before lanes: no column, no warning.
		{"server without lanes", withLanes(`"other": 1`), statusHead + clusterLine +
			`NODE  APPLIED  LAG  NATS SERVER  LAST SEEN             ERROR
a     42       0    n0           2026-11-22T11:00:00Z  -
b     40       2    n1           2026-11-22T11:00:01Z  -
`},
	} {
		var st serviceStatus
		if err := json.Unmarshal([]byte(tc.in), &st); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var b bytes.Buffer
		if err := describeStatus(&b, painter{}, &st); err != nil {
			t.Fatal(err)
		}
		if got := b.String(); squeezeSpaces(got) != squeezeSpaces(tc.want) {
			t.Errorf("%s:\n--- got\n%s--- want\n%s", tc.name, got, tc.want)
		}
	}
}

// squeezeSpaces lets the expected tables above be aligned by hand.
func squeezeSpaces(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}

// refdataJSON is a GET /admin/v1/refdata answer in a cluster of three:
// a converged, b still on nspl@1 while it loads nspl@2, c failing to load
// epraccur@1 and d's report of an old life with nothing loaded.
const refdataJSON = `{
  "datasets": [
    {"kind": "nspl", "active": null, "versions": [], "cluster": {"active": 2, "previous": 1, "versions": []}},
    {"kind": "subicb", "active": null, "versions": [], "cluster": {"active": 1, "previous": 0, "versions": []}},
    {"kind": "epraccur", "active": null, "versions": [], "cluster": {"active": 1, "previous": 0, "versions": []}}
  ],
  "active": "nspl@2,subicb@1,epraccur@1",
  "clusterActive": "nspl@2,subicb@1,epraccur@1",
  "nodes": [
    {"node": "a", "active": "nspl@2,subicb@1,epraccur@1", "updated": "2026-11-22T11:00:00Z", "converged": true},
    {"node": "b", "active": "nspl@1,subicb@1,epraccur@1", "loading": "nspl@2", "updated": "2026-11-22T11:00:01Z", "converged": false},
    {"node": "c", "active": "nspl@2,subicb@1", "error": "loading epraccur version 1: sha-256 mismatch", "updated": "2026-11-22T11:00:02Z", "converged": false},
    {"node": "d", "active": "", "updated": "2026-11-21T09:00:00Z", "converged": false}
  ]
}`

func TestConvergence(t *testing.T) {
	var l refdataList
	if err := json.Unmarshal([]byte(refdataJSON), &l); err != nil {
		t.Fatal(err)
	}
	if !l.clustered() {
		t.Fatal("not clustered")
	}
	summary, tb := convergence(refdata.Kinds, l.ClusterActive, l.Nodes)
	if want := "cluster: active nspl@2,subicb@1,epraccur@1; 1 of 4 nodes converged"; summary != want {
		t.Errorf("summary %q, want %q", summary, want)
	}
	var b bytes.Buffer
	if err := tb.write(&b); err != nil {
		t.Fatal(err)
	}
	want := `NODE  STATE      NSPL                  SUBICB     EPRACCUR                  LOADING  UPDATED               ERROR
a     converged  nspl@2                subicb@1   epraccur@1                -        2026-11-22T11:00:00Z  -
b     loading    nspl@1, cluster @2    subicb@1   epraccur@1                nspl@2   2026-11-22T11:00:01Z  -
c     failing    nspl@2                subicb@1   none, cluster @1          -        2026-11-22T11:00:02Z  loading epraccur version 1: sha-256 mismatch
d     behind     none, cluster @2      none, cluster @1  none, cluster @1   -        2026-11-21T09:00:00Z  -
`
	if squeezeSpaces(b.String()) != squeezeSpaces(want) {
		t.Errorf("got\n%s", b.String())
	}

	// One kind, and a node with a version the cluster does not have (its
	// own from before cluster mode).
	_, tb = convergence([]refdata.Kind{refdata.SubICB}, "nspl@2", []refdata.NodeLoaded{{Node: "e", Active: "nspl@2,subicb@4"}})
	b.Reset()
	_ = tb.write(&b)
	if want := "NODE STATE SUBICB LOADING UPDATED ERROR\ne behind subicb@4, cluster none - - -\n"; squeezeSpaces(b.String()) != want {
		t.Errorf("one kind: %q", b.String())
	}

	var single refdataList
	_ = json.Unmarshal([]byte(`{"datasets":[{"kind":"nspl","active":null,"versions":[]}],"active":""}`), &single)
	if single.clustered() {
		t.Error("a single node's answer counts as a cluster")
	}
}

// TestRefdataListCommand runs `refdata list` against a fixed answer: the
// versions table, then (cluster mode) the nodes; the one-kind form reads
// the nodes from the full list; json passes the server's answer through.
func TestRefdataListCommand(t *testing.T) {
	kindJSON := `{"kind":"nspl","active":null,"versions":[{"kind":"nspl","version":2,"state":"ready","active":true,"rows":6,"bytes":1300,
	  "source":"nspl-2025-11.csv","actor":"operator:x","finished":"2026-11-22T10:00:00Z"}],"cluster":{"active":2,"previous":1,"versions":[]}}`
	single := `{"datasets":[{"kind":"nspl","active":null,"versions":[]}],"active":""}`
	var answer string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/admin/v1/refdata":
			_, _ = w.Write([]byte(answer))
		case "/admin/v1/refdata/nspl":
			_, _ = w.Write([]byte(kindJSON))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("NO_COLOR", "1")
	ctl := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(append([]string{"--server", srv.URL, "--token", "t0123456789"}, args...), strings.NewReader(""), &out, &errb); code != 0 {
			t.Fatalf("emsctl %v: exit %d: %s", args, code, errb.String())
		}
		return out.String()
	}

	answer = refdataJSON
	out := ctl("refdata", "list")
	for _, want := range []string{"VERSION  STATE", "cluster: active nspl@2,subicb@1,epraccur@1; 1 of 4 nodes converged",
		"NODE  STATE      NSPL", "b     loading    nspl@1, cluster @2"} {
		if !strings.Contains(out, want) {
			t.Errorf("refdata list lacks %q:\n%s", want, out)
		}
	}
	out = ctl("refdata", "list", "nspl")
	if !strings.Contains(out, "nspl@2   ready  active") || !strings.Contains(out, "NODE  STATE      NSPL                LOADING") ||
		strings.Contains(out, "SUBICB") {
		t.Errorf("refdata list nspl:\n%s", out)
	}
	if out := ctl("refdata", "list", "-o", "json"); !strings.Contains(out, `"clusterActive": "nspl@2,subicb@1,epraccur@1"`) {
		t.Errorf("json:\n%s", out)
	}

	answer = single
	if out := ctl("refdata", "list"); strings.Contains(out, "cluster") || strings.Contains(out, "NODE") {
		t.Errorf("single node shows a cluster:\n%s", out)
	}
}
