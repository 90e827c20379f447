package integration

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ems-broker/ems/fhir"
)

// refdataMailboxes are one MESH mailbox per generic subscription, so that
// who received what says which rule matched.
var refdataMailboxes = []string{"RDGP01", "RDGPSUB01", "RDPCPREV", "RDLA01", "RDWALES", "RDGP02", "RDGPSUB02", "RDPCSUB15F", "RDLA02", "RDENGLAND"}

func refdataConfig() string {
	var mb strings.Builder
	for _, m := range refdataMailboxes {
		mb.WriteString("      " + m + ": {password: pw, ods: SUB01}\n")
	}
	return `registry:
  asids:
    "` + publisher + `":
      ods: X26
      publish_events: [pds-change-of-address-1, pds-change-of-gp-1]
    "` + subscriber + `":
      ods: SUB01
      mailboxes: [` + strings.Join(refdataMailboxes, ", ") + `]
delivery:
  mesh:
    shared_key: ` + meshKey + `
    mailboxes:
` + mb.String() + fastRetry
}

// TestGenericSubscriptionsOnReferenceData imports the reference-data
// fixtures and a demographics bootstrap through the admin API, creates one
// generic subscription per rule, publishes PDS events for patients who do
// and do not match, and checks which mailbox receives what — including a
// change of address that matches only through the previous address.
func TestGenericSubscriptionsOnReferenceData(t *testing.T) {
	e := startEMSD(t, t.TempDir(), refdataConfig())
	if resp, _ := e.admin(t, http.MethodGet, "/admin/v1/refdata", ""); resp.StatusCode == http.StatusNotFound {
		t.Skip("emsd does not mount /admin/v1/refdata yet")
	}
	src := filepath.Join("..", "subscription", "refdata", "testdata")
	for kind, file := range map[string]string{"nspl": "nspl-2025-11.csv", "subicb": "subicb-2024.csv", "epraccur": "epraccur.csv"} {
		b, err := os.ReadFile(filepath.Join(src, file))
		if err != nil {
			t.Fatal(err)
		}
		resp, body := e.admin(t, http.MethodPost, "/admin/v1/refdata/"+kind+"?name="+file, string(b))
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("import %s: %d %s", kind, resp.StatusCode, body)
		}
	}
	const (
		mover  = patient      // moves from WF14 0BQ (Kirklees, X2C4Y) to LS17 7DF (Leeds, 15F); GP B86056 (15F)
		north  = otherNHS     // CA8 7JG (Northumberland, 00L); GP A84005 (00L)
		hidden = "9000000009" // sensitive: nothing may be delivered
	)
	resp, body := e.admin(t, http.MethodPost, "/admin/v1/refdata/demographics?name=bootstrap.csv",
		"nhs_number,gp_practice,postcode,birth_date,sensitive\n"+
			mover+",B86056,WF14 0BQ,2019-10-02,\n"+
			north+",A84005,CA8 7JG,1950-01-01,\n"+
			hidden+",A84005,CA8 7JG,1950-01-01,true\n")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("demographics import: %d %s", resp.StatusCode, body)
	}
	var list struct {
		Active string `json:"active"`
	}
	_, body = e.admin(t, http.MethodGet, "/admin/v1/refdata", "")
	if json.Unmarshal([]byte(body), &list); list.Active != "nspl@1,subicb@1,epraccur@1" {
		t.Fatalf("active datasets: %s", body)
	}

	create := func(mailbox, event, rule, org string) {
		t.Helper()
		crit := "/Bundle?type=message&MessageHeader.event=" + event + "&subscriptionRuleType=" + rule + "&Organization.identifier=" + org
		resp, body := e.request(t, http.MethodPost, "/STU3/Subscription", genericJSON("SUB01", mailbox, crit),
			map[string]string{"fromASID": subscriber, "Content-Type": "application/fhir+json"})
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("create %s: %d %s", mailbox, resp.StatusCode, body)
		}
	}
	coa, cogp := "pds-change-of-address-1", "pds-change-of-gp-1"
	create("RDGP01", coa, "GP_GP_GP", "B86056")
	create("RDGPSUB01", coa, "CHO_GP_CCG", "15F")
	create("RDPCPREV", coa, "CHO_POSTCODE_CCG", "X2C4Y") // only the previous address is in X2C4Y
	create("RDLA01", coa, "UHV_POSTCODE_LACODE", "E08000035")
	create("RDWALES", coa, "COUNTRYCODE", "W92000004")
	create("RDGP02", cogp, "GP_GP_GP", "A84005")
	create("RDGPSUB02", cogp, "CHO_GP_CCG", "00L")
	create("RDPCSUB15F", cogp, "CHO_POSTCODE_CCG", "15F")
	create("RDLA02", cogp, "UHV_POSTCODE_LACODE", "E06000057")
	create("RDENGLAND", cogp, "COUNTRYCODE", "E92000001")

	publish := func(file string, replace ...string) {
		t.Helper()
		raw, err := os.ReadFile(filepath.Join("..", "testdata", "nems-examples", file))
		if err != nil {
			t.Fatal(err)
		}
		raw = []byte(strings.NewReplacer(replace...).Replace(string(raw)))
		b, _, _ := withNewID(t, raw, fhir.FormatXML)
		resp, body := e.post(t, "/STU3/Events/1/$process-message", b, map[string]string{"Content-Type": "application/fhir+xml", "fromASID": publisher})
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("publish %s: %d %s", file, resp.StatusCode, body)
		}
	}
	// The mover's change of address (LS17 7DF new, WF14 0BQ old).
	publish("PDS-Change-Of-Address-ems-example.xml")
	// The mover's change of GP: still B86056, now at LS17 7DF.
	publish("PDS-Change-Of-GP-ems-example.xml")
	// The Northumberland patient's change of GP, to A84005.
	publish("PDS-Change-Of-GP-ems-example.xml", mover, north, "B86056", "A84005", "LS17 7DF", "CA8 7JG")
	// The sensitive patient's: nothing at all.
	publish("PDS-Change-Of-GP-ems-example.xml", mover, hidden, "B86056", "A84005", "LS17 7DF", "CA8 7JG")

	want := map[string]int{"RDGP01": 1, "RDGPSUB01": 1, "RDPCPREV": 1, "RDLA01": 1, "RDWALES": 0,
		"RDGP02": 1, "RDGPSUB02": 1, "RDPCSUB15F": 1, "RDLA02": 1, "RDENGLAND": 2}
	newMailboxTally().expect(t, e.baseURL(), want)
}

// mailboxTally drains built-in mailboxes through the MESH API and counts
// what each has received.
type mailboxTally struct {
	clients map[string]*meshClient // by base URL + mailbox
	got     map[string]int
}

func newMailboxTally() *mailboxTally {
	return &mailboxTally{clients: map[string]*meshClient{}, got: map[string]int{}}
}

// expect drains want's mailboxes through base until each has received its
// count (20 s at most), waits a second more for a delivery that should not
// happen, and fails on any difference.
func (m *mailboxTally) expect(t *testing.T, base string, want map[string]int) {
	t.Helper()
	drain := func() {
		for mb := range want {
			c := m.clients[base+" "+mb]
			if c == nil {
				c = newMeshClient(base, mb, "pw", meshKey)
				m.clients[base+" "+mb] = c
			}
			msgs, err := c.drain(t)
			if err != nil {
				t.Fatal(err)
			}
			m.got[mb] += len(msgs)
		}
	}
	complete := func() bool {
		for mb, n := range want {
			if m.got[mb] < n {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(20 * time.Second); !complete() && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		drain()
	}
	time.Sleep(time.Second) // room for a delivery that should not happen
	drain()
	for mb, n := range want {
		if m.got[mb] != n {
			t.Errorf("%s received %d messages, want %d", mb, m.got[mb], n)
		}
	}
}
