package refdata

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/subscription"
)

// TestApplyOrder: an event older than the one that last set a group of
// fields does not undo it; the sequences make the end state the one of
// stream order, whichever order the events are observed in.
func TestApplyOrder(t *testing.T) {
	yes, no := true, false
	reg := func(b bool) *bool { return &b }
	type step struct {
		pds bool
		seq uint64
		o   observation
	}
	// Change of address A→B at 10, B→C at 11 (C's event names B as old).
	coaB := observation{postcode: "BB11BB", previous: "AA11AA"}
	coaC := observation{postcode: "CC11CC", previous: "BB11BB"}
	for _, tc := range []struct {
		name  string
		start Patient
		steps []step
		want  Patient
	}{{
		name:  "older change of address after a newer one keeps the newer",
		start: Patient{Postcode: "AA11AA"},
		steps: []step{{true, 11, coaC}, {true, 10, coaB}},
		want:  Patient{Postcode: "CC11CC", PreviousPostcode: "BB11BB", Seq: FieldSeqs{Address: 11}},
	}, {
		name:  "in stream order, the same end state",
		start: Patient{Postcode: "AA11AA"},
		steps: []step{{true, 10, coaB}, {true, 11, coaC}},
		want:  Patient{Postcode: "CC11CC", PreviousPostcode: "BB11BB", Seq: FieldSeqs{Address: 11}},
	}, {
		name:  "older event sets the groups the newer one did not state",
		start: Patient{Postcode: "AA11AA", GPPractice: "A84005", Registered: reg(true)},
		steps: []step{
			{true, 11, observation{gp: "B86056", gpKnown: true}},
			{true, 10, observation{postcode: "BB11BB", previous: "AA11AA", birthDate: "2019-10-02", gp: "A84005", gpKnown: true}},
		},
		want: Patient{GPPractice: "B86056", Registered: reg(true), Postcode: "BB11BB", PreviousPostcode: "AA11AA", BirthDate: "2019-10-02",
			Seq: FieldSeqs{GP: 11, Address: 10, Birth: 10}},
	}, {
		name:  "older event fills the previous postcode the newer one left empty",
		steps: []step{{true, 11, observation{postcode: "CC11CC"}}, {true, 10, observation{postcode: "BB11BB"}}},
		want:  Patient{Postcode: "CC11CC", PreviousPostcode: "BB11BB", Seq: FieldSeqs{Address: 11}},
	}, {
		name:  "older event does not undo a newer de-registration",
		start: Patient{GPPractice: "A84005", Registered: reg(true)},
		steps: []step{{true, 11, observation{gpKnown: true}}, {true, 10, observation{gp: "B86056", gpKnown: true}}},
		want:  Patient{Registered: reg(false), Seq: FieldSeqs{GP: 11}},
	}, {
		name:  "older death notification after its newer removal",
		steps: []step{{true, 11, observation{deceased: &no}}, {true, 10, observation{deceased: &yes, deathDate: "2026-01-02"}}},
		want:  Patient{Seq: FieldSeqs{Death: 11}},
	}, {
		name:  "older sensitive label after a newer record change without one",
		steps: []step{{true, 11, observation{sensitive: &no}}, {true, 10, observation{sensitive: &yes}}},
		want:  Patient{Seq: FieldSeqs{Sensitive: 11}},
	}, {
		name:  "another publisher's label outlives an older record change",
		steps: []step{{false, 11, observation{sensitive: &yes}}, {true, 10, observation{sensitive: &no}}},
		want:  Patient{Sensitive: true, Seq: FieldSeqs{Sensitive: 11}},
	}, {
		name:  "a record change after another publisher's label clears it",
		steps: []step{{true, 12, observation{sensitive: &no}}, {false, 11, observation{sensitive: &yes}}},
		want:  Patient{Seq: FieldSeqs{Sensitive: 12}},
	}, {
		name:  "another publisher's fill yields to an older PDS event",
		steps: []step{{false, 11, observation{postcode: "ZZ11ZZ", birthDate: "1990-01-01"}}, {true, 10, coaB}},
		want:  Patient{Postcode: "BB11BB", PreviousPostcode: "AA11AA", BirthDate: "1990-01-01", Seq: FieldSeqs{Address: 10}},
	}, {
		name:  "another publisher only fills",
		start: Patient{Postcode: "BB11BB", GPPractice: "A84005", Registered: reg(true), Seq: FieldSeqs{Address: 3}},
		steps: []step{{false, 11, observation{postcode: "ZZ11ZZ", gp: "B86056", gpKnown: true}}},
		want:  Patient{Postcode: "BB11BB", GPPractice: "A84005", Registered: reg(true), Seq: FieldSeqs{Address: 3}},
	}, {
		name:  "a record without sequences is sequence 0",
		start: Patient{Postcode: "AA11AA", Deceased: true, DeathDate: "2026-01-01"},
		steps: []step{{true, 1, observation{postcode: "BB11BB", deceased: &no}}},
		want:  Patient{Postcode: "BB11BB", PreviousPostcode: "AA11AA", Seq: FieldSeqs{Address: 1, Death: 1}},
	}, {
		name:  "an event without a sequence applies as the newest and stamps nothing",
		start: Patient{Postcode: "CC11CC", Seq: FieldSeqs{Address: 11}},
		steps: []step{{true, 0, coaB}},
		want:  Patient{Postcode: "BB11BB", PreviousPostcode: "AA11AA", Seq: FieldSeqs{Address: 11}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.start
			for _, s := range tc.steps {
				s.o.apply(&p, s.pds, s.seq)
			}
			if !reflect.DeepEqual(p, tc.want) {
				t.Errorf("got  %+v\nwant %+v", p, tc.want)
			}
			// A redelivery of every step at its own sequence changes nothing.
			again := p
			for _, s := range tc.steps {
				s.o.apply(&again, s.pds, s.seq)
			}
			if !reflect.DeepEqual(again, p) {
				t.Errorf("redelivery changed %+v\nto %+v", p, again)
			}
		})
	}
}

// TestPatientSeqJSON: records written before the sequences read as
// sequence 0, and a record without any writes no "seq".
func TestPatientSeqJSON(t *testing.T) {
	var p Patient
	if err := json.Unmarshal([]byte(`{"nhsNumber":"9912003888","postcode":"LS177DF","updated":"2026-01-01T00:00:00Z"}`), &p); err != nil {
		t.Fatal(err)
	}
	if p.Seq != (FieldSeqs{}) || p.Postcode != "LS177DF" {
		t.Errorf("old record read as %+v", p)
	}
	if b, _ := json.Marshal(p); strings.Contains(string(b), "seq") {
		t.Errorf("unsequenced record written as %s", b)
	}
	p.Seq.Address = 42
	b, _ := json.Marshal(p)
	var back Patient
	if err := json.Unmarshal(b, &back); err != nil || back.Seq != (FieldSeqs{Address: 42}) {
		t.Errorf("%s read back as %+v %v", b, back, err)
	}
}

// Events e (home LS17 7DF, old WF14 0BQ) and e+1 (moving on to LS1 1AA)
// of one patient, at stream sequences coaSeq and coaSeq+1.
const coaSeq = 1000

var coaFacts = subscription.EventFacts{EventCode: "pds-change-of-address-1", NHSNumber: nhsMover}

func atSeq(seq uint64) context.Context {
	return subscription.ContextWithEventSeq(context.Background(), seq)
}

func coaEvents(t *testing.T) (earlier, later *fhir.Node) {
	return readEvent(t, "PDS-Change-Of-Address-ems-example.xml"),
		readEvent(t, "PDS-Change-Of-Address-ems-example.xml", "LS17 7DF", "LS1 1AA", "WF14 0BQ", "LS17 7DF")
}

func checkNewerKept(t *testing.T, d Demographics) {
	t.Helper()
	p, ok, err := d.Patient(context.Background(), nhsMover)
	if err != nil || !ok {
		t.Fatalf("record: %v %v", ok, err)
	}
	if p.Postcode != "LS11AA" || p.PreviousPostcode != "LS177DF" || p.Seq.Address != coaSeq+1 {
		t.Errorf("after e+1 then e: %+v; want e+1's LS11AA, previous LS177DF", p)
	}
}

// TestSharedDemographicsOrder: node a observes e+1, then node b the older
// e of the same patient; the record keeps e+1's address.
func TestSharedDemographicsOrder(t *testing.T) {
	s := startJS(t)
	a, b := openClusterNode(t, s, "a", nil), openClusterNode(t, s, "b", nil)
	earlier, later := coaEvents(t)
	if _, err := a.svc.Complete(atSeq(coaSeq+1), coaFacts, later); err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.Complete(atSeq(coaSeq), coaFacts, earlier); err != nil {
		t.Fatal(err)
	}
	checkNewerKept(t, a.svc.Demographics())
	// A redelivery of either, on either node, changes nothing.
	if _, err := b.svc.Complete(atSeq(coaSeq+1), coaFacts, later); err != nil {
		t.Fatal(err)
	}
	if _, err := a.svc.Complete(atSeq(coaSeq), coaFacts, earlier); err != nil {
		t.Fatal(err)
	}
	checkNewerKept(t, b.svc.Demographics())

	// At the same moment on both nodes, either may write first: e+1's
	// address stands for every patient.
	const patients = 24
	var wg sync.WaitGroup
	errs := make(chan error, 2*patients)
	for i := range patients {
		nhs := scaleNHS(100*i + 2_000_000)
		facts := subscription.EventFacts{EventCode: coaFacts.EventCode, NHSNumber: nhs}
		e := readEvent(t, "PDS-Change-Of-Address-ems-example.xml", nhsMover, nhs)
		e1 := readEvent(t, "PDS-Change-Of-Address-ems-example.xml", nhsMover, nhs, "LS17 7DF", "LS1 1AA", "WF14 0BQ", "LS17 7DF")
		wg.Add(2)
		go func() { defer wg.Done(); _, err := a.svc.Complete(atSeq(coaSeq+1), facts, e1); errs <- err }()
		go func() { defer wg.Done(); _, err := b.svc.Complete(atSeq(coaSeq), facts, e); errs <- err }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range patients {
		nhs := scaleNHS(100*i + 2_000_000)
		if p, _, _ := a.svc.Demographics().Patient(context.Background(), nhs); p.Postcode != "LS11AA" || p.PreviousPostcode != "LS177DF" {
			t.Errorf("patient %s after concurrent e and e+1: %+v", nhs, p)
		}
	}
}

// TestDemographicsStoreOrder: the same on one node's bbolt, where a
// redelivered event can also come after newer ones.
func TestDemographicsStoreOrder(t *testing.T) {
	svc, err := New(Options{DB: openDB(t), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	earlier, later := coaEvents(t)
	if _, err := svc.Complete(atSeq(coaSeq+1), coaFacts, later); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Complete(atSeq(coaSeq), coaFacts, earlier); err != nil {
		t.Fatal(err)
	}
	checkNewerKept(t, svc.Demographics())
}
