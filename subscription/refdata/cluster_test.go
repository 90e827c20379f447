package refdata

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/subscription"
)

// jsServer is an embedded JetStream server; each connect is a separate
// client, as two emsd nodes are.
type jsServer struct{ srv *server.Server }

func startJS(t testing.TB) *jsServer {
	t.Helper()
	srv, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), DontListen: true, NoSigs: true, NoLog: true, MaxPayload: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return &jsServer{srv: srv}
}

func (s *jsServer) connect(t testing.TB) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(s.srv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// clusterNode is one emsd's refdata service and its admin routes.
type clusterNode struct {
	svc  *Service
	db   *bolt.DB
	http *httptest.Server
}

func openClusterNode(t testing.TB, s *jsServer, name string, db *bolt.DB) *clusterNode {
	t.Helper()
	return openClusterNodeJS(t, s.connect(t), name, db, 1)
}

func openClusterNodeJS(t testing.TB, js jetstream.JetStream, name string, db *bolt.DB, replicas int) *clusterNode {
	t.Helper()
	if db == nil {
		db = openDB(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := Open(ctx, Options{DB: db, Logger: quietLogger(),
		Cluster: ClusterOptions{JS: js, Node: name, Replicas: replicas, Retry: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	n := &clusterNode{svc: svc, db: db}
	if tt, ok := t.(*testing.T); ok {
		mux := http.NewServeMux()
		if err := svc.RegisterAdmin(mux, AdminOptions{Actor: func(*http.Request) string { return name + "-operator" }}); err != nil {
			t.Fatal(err)
		}
		n.http = httptest.NewServer(mux)
		tt.Cleanup(n.http.Close)
	}
	t.Cleanup(svc.Close)
	return n
}

func (n *clusterNode) post(t *testing.T, path, file string, out any) int {
	t.Helper()
	var body *os.File
	if file != "" {
		f, err := os.Open(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		body = f
	}
	req, _ := http.NewRequest(http.MethodPost, n.http.URL+path, nil)
	if body != nil {
		st, _ := body.Stat()
		req.Body, req.ContentLength = body, st.Size()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

type listAnswer struct {
	Datasets      []KindVersions `json:"datasets"`
	Active        string         `json:"active"`
	ClusterActive string         `json:"clusterActive"`
	Nodes         []NodeLoaded   `json:"nodes"`
}

func (n *clusterNode) list(t *testing.T) listAnswer {
	t.Helper()
	resp, err := http.Get(n.http.URL + "/admin/v1/refdata")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out listAnswer
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// eventually polls cond for up to 10 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClusterImportOnEitherNode: an import, an activation or a rollback
// on either node becomes what both match with, and the list shows both
// nodes converged.
func TestClusterImportOnEitherNode(t *testing.T) {
	s := startJS(t)
	a, b := openClusterNode(t, s, "a", nil), openClusterNode(t, s, "b", nil)

	var v Version
	if code := a.post(t, "/admin/v1/refdata/nspl?name=nspl-2025-05.csv", "nspl-2025-05.csv", &v); code != http.StatusCreated || v.Version != 1 || !v.Active {
		t.Fatalf("import on a: %d %+v", code, v)
	}
	if code := b.post(t, "/admin/v1/refdata/subicb?name=subicb-2024.csv", "subicb-2024.csv", &v); code != http.StatusCreated {
		t.Fatalf("import on b: %d %+v", code, v)
	}
	for _, n := range []*clusterNode{a, b} {
		eventually(t, "both datasets on every node", func() bool { return n.svc.Store().Label() == "nspl@1,subicb@1" })
	}
	area, ok := lookup(t, b.svc.Store(), "LS17 7DF")
	if !ok || area.LocalAuthority != "E08000035" {
		t.Fatalf("b's lookup: %+v %v", area, ok)
	}
	eventually(t, "both nodes reported converged", func() bool {
		l := a.list(t)
		return l.ClusterActive == "nspl@1,subicb@1" && len(l.Nodes) == 2 && l.Nodes[0].Converged && l.Nodes[1].Converged
	})

	// A second directory, imported on b without activating it, is loaded
	// by a; activating it on a switches both; rolling back on b returns both.
	if code := b.post(t, "/admin/v1/refdata/nspl?name=nspl-2025-11.csv&activate=false", "nspl-2025-11.csv", &v); code != http.StatusCreated || v.Version != 2 || v.Active {
		t.Fatalf("second import: %d %+v", code, v)
	}
	eventually(t, "a loads the inactive version", func() bool { _, err := a.svc.Store().Version(NSPL, 2); return err == nil })
	if code := a.post(t, "/admin/v1/refdata/nspl/2/activate", "", &v); code != http.StatusOK || !v.Active {
		t.Fatalf("activate on a: %d %+v", code, v)
	}
	for _, n := range []*clusterNode{a, b} {
		eventually(t, "nspl@2 everywhere", func() bool { return n.svc.Store().Label() == "nspl@2,subicb@1" })
	}
	if code := b.post(t, "/admin/v1/refdata/nspl/rollback", "", &v); code != http.StatusOK || v.Version != 1 {
		t.Fatalf("rollback on b: %d %+v", code, v)
	}
	for _, n := range []*clusterNode{a, b} {
		eventually(t, "nspl@1 everywhere again", func() bool { return n.svc.Store().Label() == "nspl@1,subicb@1" })
		vs, _ := n.svc.Store().Versions(NSPL)
		if len(vs) != 2 || !vs[0].Active || !vs[1].Previous {
			t.Errorf("versions after rollback: %+v", vs)
		}
	}
	if code := a.post(t, "/admin/v1/refdata/epraccur/9/activate", "", nil); code != http.StatusNotFound {
		t.Errorf("activating a version the cluster does not have: %d", code)
	}
}

// TestClusterRestartAndJoin: a restarted node keeps its versions without
// reloading them; a new node loads them before Open returns.
func TestClusterRestartAndJoin(t *testing.T) {
	s := startJS(t)
	db := openDB(t)
	a := openClusterNode(t, s, "a", db)
	if code := a.post(t, "/admin/v1/refdata/epraccur?name=epraccur.csv", "epraccur.csv", nil); code != http.StatusCreated {
		t.Fatalf("import: %d", code)
	}
	before, err := a.svc.Store().Active(Practices)
	if err != nil {
		t.Fatal(err)
	}
	a.svc.Close()

	again := openClusterNode(t, s, "a", db)
	after, err := again.svc.Store().Active(Practices)
	if err != nil || after.Version != 1 || !after.Finished.Equal(before.Finished) {
		t.Errorf("after restart: %+v (was %+v), %v", after, before, err)
	}
	joined := openClusterNode(t, s, "c", nil)
	if got := joined.svc.Store().Label(); got != "epraccur@1" {
		t.Errorf("a joining node matches with %q before it has the cluster's data", got)
	}
	v, _ := joined.svc.Store().Active(Practices)
	if v.SHA256 != before.SHA256 || v.Rows != before.Rows {
		t.Errorf("joined node loaded %+v, imported was %+v", v, before)
	}
}

// TestClusterFailedImportInvisible: a file that fails validation leaves
// no version on any node, in the cluster state or in the object store.
func TestClusterFailedImportInvisible(t *testing.T) {
	s := startJS(t)
	a, b := openClusterNode(t, s, "a", nil), openClusterNode(t, s, "b", nil)
	bad := filepath.Join(t.TempDir(), "bad.csv")
	good, _ := os.ReadFile("testdata/nspl-2025-11.csv")
	if err := os.WriteFile(bad, append(good, []byte("\"ZZ\",\"ZZ 1\"\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(bad)
	defer f.Close()
	_, err := a.svc.cluster.importFile(context.Background(), NSPL, f, Source{Name: "bad.csv", Activate: true})
	var ie *ImportError
	if !errors.As(err, &ie) {
		t.Fatalf("bad file: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // room for a wrong state to propagate
	for _, n := range []*clusterNode{a, b} {
		if vs, _ := n.svc.Store().Versions(NSPL); len(vs) != 0 {
			t.Errorf("a node has versions of a failed import: %+v", vs)
		}
	}
	st, _, _ := a.svc.cluster.state(NSPL)
	if len(st.Versions) != 0 || st.Active != 0 {
		t.Errorf("cluster state lists a failed import: %+v", st)
	}
	objs, err := a.svc.cluster.obs.List(context.Background())
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		t.Fatal(err)
	}
	if len(objs) != 0 {
		t.Errorf("object store keeps %d objects of a failed import", len(objs))
	}
	// The next import takes the next number; the failed one leaves a gap.
	var v Version
	if code := b.post(t, "/admin/v1/refdata/nspl?name=nspl-2025-11.csv", "nspl-2025-11.csv", &v); code != http.StatusCreated || v.Version != 2 {
		t.Fatalf("good import after a bad one: %d %+v", code, v)
	}
	eventually(t, "a has nspl@2", func() bool { return a.svc.Store().Label() == "nspl@2" })
}

// TestSharedDemographics: what one node observed is what the other
// matches with, and concurrent observations of one patient both land.
func TestSharedDemographics(t *testing.T) {
	s := startJS(t)
	a, b := openClusterNode(t, s, "a", nil), openClusterNode(t, s, "b", nil)
	for _, f := range []struct {
		k    Kind
		file string
	}{{NSPL, "nspl-2025-11.csv"}, {SubICB, "subicb-2024.csv"}, {Practices, "epraccur.csv"}} {
		if code := a.post(t, "/admin/v1/refdata/"+string(f.k)+"?name="+f.file, f.file, nil); code != http.StatusCreated {
			t.Fatalf("import %s: %d", f.file, code)
		}
	}
	eventually(t, "b has the datasets", func() bool { return b.svc.Store().Label() == "nspl@1,subicb@1,epraccur@1" })
	ctx := context.Background()

	// a fans out the change of address (home LS17 7DF, Leeds).
	coa := readEvent(t, "PDS-Change-Of-Address-ems-example.xml")
	if _, err := a.svc.Complete(ctx, subscription.EventFacts{EventCode: "pds-change-of-address-1", NHSNumber: nhsMover}, coa); err != nil {
		t.Fatal(err)
	}
	// b fans out a later vaccination whose bundle still has the old
	// address (Kirklees): the record a observed wins, as on one node.
	stale := readEvent(t, "PDS-Change-Of-Address-ems-example.xml", "LS17 7DF", "WF14 0BQ")
	f, err := b.svc.Complete(ctx, subscription.EventFacts{EventCode: "vaccinations-1", NHSNumber: nhsMover}, stale)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.LocalAuthority, []string{"E08000035"}) || f.RefData != "nspl@1,subicb@1,epraccur@1" {
		t.Errorf("b matched with %+v; want Leeds from a's observation", f)
	}
	if p, ok, _ := b.svc.Demographics().Patient(ctx, nhsMover); !ok || p.Postcode != "LS177DF" {
		t.Errorf("b reads %+v", p)
	}
	// The bbolt store is not written in cluster mode.
	if _, ok, _ := a.svc.Patients().Patient(ctx, nhsMover); ok {
		t.Error("cluster mode wrote the node's bbolt demographics")
	}

	// Two nodes changing one record at once: the change of GP and a death
	// notification both land (compare-and-set retries, no lost update).
	gp := readEvent(t, "PDS-Change-Of-GP-ems-example.xml")
	death := readEvent(t, "PDS-Death-Notification-formal-ems-example.xml", "6101231234", nhsMover)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, err := a.svc.Complete(ctx, subscription.EventFacts{EventCode: "pds-change-of-gp-1", NHSNumber: nhsMover}, gp)
			errs <- err
		}()
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				_, err := b.svc.Complete(ctx, subscription.EventFacts{EventCode: "pds-death-notification-1", NHSNumber: nhsMover}, death)
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if p, _, _ := a.svc.Demographics().Patient(ctx, nhsMover); p.GPPractice != "B86056" || !p.Deceased || p.Postcode != "LS177DF" {
		t.Errorf("after concurrent observations: %+v", p)
	}

	// A bootstrap CSV through a's admin API is read by b; a bad one
	// changes nothing anywhere.
	csv := filepath.Join(t.TempDir(), "demo.csv")
	_ = os.WriteFile(csv, []byte("nhs_number,gp_practice,postcode\n"+nhsOther+",A84005,WF14 0BQ\n"), 0o600)
	if n, err := a.svc.shared.ImportCSV(ctx, strings.NewReader(mustRead(t, csv)), "demo.csv"); err != nil || n != 1 {
		t.Fatalf("bootstrap: %d %v", n, err)
	}
	if p, ok, _ := b.svc.Demographics().Patient(ctx, nhsOther); !ok || p.GPPractice != "A84005" || p.Postcode != "WF140BQ" {
		t.Errorf("b reads the bootstrap as %+v %v", p, ok)
	}
	if _, err := a.svc.shared.ImportCSV(ctx, strings.NewReader("nhs_number,postcode\n"+nhsMover+",LS1 1AA\n"+nhsOther+",nonsense\n"), "bad.csv"); err == nil {
		t.Fatal("bad bootstrap accepted")
	}
	if p, _, _ := b.svc.Demographics().Patient(ctx, nhsMover); p.Postcode != "LS177DF" {
		t.Errorf("bad bootstrap leaked: %+v", p)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestGroupCommitIsolatesFailures: the demographics' group commit writes
// every caller's change, and a failing caller fails alone.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	d, err := OpenDemographics(openDB(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 64)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.commit(func(tx *bolt.Tx) error {
				if i == 7 {
					return boom
				}
				return tx.Bucket(bucketPatients).Put([]byte(scaleNHS(100*i)), []byte(`{}`))
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if want := error(nil); i == 7 {
			if !errors.Is(err, boom) {
				t.Errorf("caller 7: %v", err)
			}
		} else if err != want {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	n := 0
	_ = d.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketPatients).Stats().KeyN; return nil })
	if n != 63 {
		t.Errorf("%d records written, want 63", n)
	}
}

// TestClusterTakesOverLocalVersions: a node with datasets of its own from
// before cluster mode keeps them until the cluster imports that kind, and
// the cluster's file replaces a local one under the same number.
func TestClusterTakesOverLocalVersions(t *testing.T) {
	s := startJS(t)
	db := openDB(t)
	single, err := New(Options{DB: db, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	own := importFile(t, single.Store(), NSPL, "nspl-2025-05.csv")
	old := openClusterNode(t, s, "old", db)
	if got, _ := old.svc.Store().Active(NSPL); got.SHA256 != own.SHA256 {
		t.Fatalf("the node's own directory was not kept: %+v", got)
	}
	b := openClusterNode(t, s, "b", nil)
	var v Version
	if code := b.post(t, "/admin/v1/refdata/nspl?name=nspl-2025-11.csv", "nspl-2025-11.csv", &v); code != http.StatusCreated || v.Version != 1 {
		t.Fatalf("import: %d %+v", code, v)
	}
	eventually(t, "the cluster's nspl@1 replaces the node's", func() bool {
		got, err := old.svc.Store().Active(NSPL)
		return err == nil && got.SHA256 == v.SHA256
	})
	if area, ok := lookup(t, old.svc.Store(), "CA8 7JG"); !ok || area.LocalAuthority != "E06000057" {
		t.Errorf("lookup after the replacement: %+v %v", area, ok)
	}
}
