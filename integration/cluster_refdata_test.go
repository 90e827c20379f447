package integration

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ems-broker/ems/fhir"
)

// clusterRefdataConfig is a cluster-mode emsd with the generic
// subscriptions' registry and mailboxes (refdataConfig).
func clusterRefdataConfig(c *natsCluster, node string) string {
	return "nats:\n  urls: [" + strings.Join(c.urls(), ", ") + "]\n" +
		"cluster:\n  enabled: true\n  node_name: " + node + "\n  replicas: 3\n" +
		"admin:\n  tokens:\n    - name: integration\n      token: " + adminToken + "\n" +
		refdataConfig()
}

func startClusterRefdataEMSD(t *testing.T, c *natsCluster, node string) *emsd {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "emsd.yaml"), []byte(clusterRefdataConfig(c, node)), 0o600); err != nil {
		t.Fatal(err)
	}
	return startEMSD(t, dir, "")
}

// refdataList is the part of GET /admin/v1/refdata this test reads.
type refdataList struct {
	Active        string `json:"active"`
	ClusterActive string `json:"clusterActive"`
	Nodes         []struct {
		Node      string `json:"node"`
		Active    string `json:"active"`
		Converged bool   `json:"converged"`
	} `json:"nodes"`
}

// TestClusterSharedRefdata: reference data imported through node a's
// admin API is what node b matches with, and a change of address that
// only node b fanned out is what node a matches the patient's next event
// with. Each event is fanned out by one node only, because the other is
// stopped: otherwise the shared fan-out consumer picks the node.
func TestClusterSharedRefdata(t *testing.T) {
	c := startNATSCluster(t)
	a := startClusterRefdataEMSD(t, c, "a")
	b := startClusterRefdataEMSD(t, c, "b")

	src := filepath.Join("..", "subscription", "refdata", "testdata")
	for kind, file := range map[string]string{"nspl": "nspl-2025-11.csv", "subicb": "subicb-2024.csv", "epraccur": "epraccur.csv"} {
		body, err := os.ReadFile(filepath.Join(src, file))
		if err != nil {
			t.Fatal(err)
		}
		resp, out := a.admin(t, http.MethodPost, "/admin/v1/refdata/"+kind+"?name="+file, string(body))
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("import %s on a: %d %s", kind, resp.StatusCode, out)
		}
	}
	const want = "nspl@1,subicb@1,epraccur@1"
	var list refdataList
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, out := b.admin(t, http.MethodGet, "/admin/v1/refdata", "")
		list = refdataList{}
		_ = json.Unmarshal([]byte(out), &list)
		converged := len(list.Nodes) == 2
		for _, n := range list.Nodes {
			converged = converged && n.Converged && n.Active == want
		}
		if list.Active == want && list.ClusterActive == want && converged {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b did not converge on a's import: %s", out)
		}
	}

	coa, cogp := "pds-change-of-address-1", "pds-change-of-gp-1"
	create := func(e *emsd, mailbox, event, rule, org string) {
		t.Helper()
		crit := "/Bundle?type=message&MessageHeader.event=" + event + "&subscriptionRuleType=" + rule + "&Organization.identifier=" + org
		resp, body := e.request(t, http.MethodPost, "/STU3/Subscription", genericJSON("SUB01", mailbox, crit),
			map[string]string{"fromASID": subscriber, "Content-Type": "application/fhir+json"})
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("create %s: %d %s", mailbox, resp.StatusCode, body)
		}
	}
	create(b, "RDLA01", coa, "UHV_POSTCODE_LACODE", "E08000035") // Leeds: the new address
	create(b, "RDPCPREV", coa, "CHO_POSTCODE_CCG", "X2C4Y")      // only the previous address
	create(a, "RDPCSUB15F", cogp, "CHO_POSTCODE_CCG", "15F")     // LS17 7DF's sub-ICB
	create(a, "RDLA02", cogp, "UHV_POSTCODE_LACODE", "E08000035")
	time.Sleep(500 * time.Millisecond) // both nodes apply the subscription change log

	publish := func(e *emsd, file string, edit func(string) string) {
		t.Helper()
		raw, err := os.ReadFile(filepath.Join("..", "testdata", "nems-examples", file))
		if err != nil {
			t.Fatal(err)
		}
		body, _, _ := withNewID(t, []byte(edit(string(raw))), fhir.FormatXML)
		resp, out := e.post(t, "/STU3/Events/1/$process-message", body, map[string]string{"Content-Type": "application/fhir+xml", "fromASID": publisher})
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("publish %s: %d %s", file, resp.StatusCode, out)
		}
	}
	tally := newMailboxTally()
	wait := func(e *emsd, want map[string]int) {
		t.Helper()
		tally.expect(t, e.baseURL(), want)
	}

	// Only b runs: it fans out the change of address (LS17 7DF new,
	// WF14 0BQ old) with the datasets a imported, and records the move.
	a.stop()
	publish(b, "PDS-Change-Of-Address-ems-example.xml", func(s string) string { return s })
	wait(b, map[string]int{"RDLA01": 1, "RDPCPREV": 1})

	// Only a runs: the patient's change of GP carries no address, so the
	// postcode rules can match only through the move b observed.
	a.start()
	b.stop()
	noAddress := regexp.MustCompile(`(?s)<address>.*?</address>`)
	publish(a, "PDS-Change-Of-GP-ems-example.xml", func(s string) string { return noAddress.ReplaceAllString(s, "") })
	wait(a, map[string]int{"RDPCSUB15F": 1, "RDLA02": 1})
	if t.Failed() {
		t.Logf("a's log:\n%s", lastLines(a.logText(), 40))
	}
}
