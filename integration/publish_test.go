package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/fhir"
)

// validExamples are the official examples INDEX.md calls valid, with the
// event and routing NHS number each must be stored under.
var validExamples = []struct {
	file, event, nhs string
}{
	{"BirthNotificationWithoutMother.xml", "pds-birth-notification-1", ""},
	{"PDS-Change-Of-Address-ems-example.xml", "pds-change-of-address-1", "9912003888"},
	{"PDS-Change-Of-GP-ems-example.xml", "pds-change-of-gp-1", "9912003888"},
	{"PDS-Record-Change-Citizen.xml", "pds-record-change-1", ""},
	{"PDS-Record-Change.xml", "pds-record-change-1", ""},
	{"Professional-Contacts-1-delete.xml", "professional-contacts-1", ""},
	{"Professional-Contacts-1-new.xml", "professional-contacts-1", ""},
	{"Professional-Contacts-1-update.xml", "professional-contacts-1", ""},
	{"blood-spot-test-outcome-1-delete.xml", "blood-spot-test-outcome-1", ""},
	{"blood-spot-test-outcome-1-new.xml", "blood-spot-test-outcome-1", ""},
	{"blood-spot-test-outcome-1-update.xml", "blood-spot-test-outcome-1", ""},
	{"newborn-hearing-1-delete.xml", "newborn-hearing-1", ""},
	{"newborn-hearing-1-new.xml", "newborn-hearing-1", ""},
	{"newborn-hearing-1-update.xml", "newborn-hearing-1", ""},
	{"nipe-outcome-1-delete.xml", "nipe-outcome-1", ""},
	{"nipe-outcome-1-new.xml", "nipe-outcome-1", ""},
	{"vaccinations-1-delete.xml", "vaccinations-1", ""},
	{"vaccinations-1-new.xml", "vaccinations-1", ""},
	{"vaccinations-1-notgiven-new.xml", "vaccinations-1", ""},
	{"vaccinations-1-update.xml", "vaccinations-1", ""},
}

// published is what the test expects to find in the stream for one message.
type published struct {
	event, nhs, contentType string
}

// withNewID returns the bundle with a fresh MessageHeader.id, in the given
// format, and the id.
func withNewID(t *testing.T, xmlBody []byte, format fhir.Format) ([]byte, string, string) {
	t.Helper()
	root, err := fhir.ParseXML(xmlBody, fhir.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	header := root.ChildrenNamed("entry")[0].Child("resource").Resource()
	nhs := ""
	for _, ext := range header.ChildrenNamed("extension") {
		for _, sub := range ext.ChildrenNamed("extension") {
			if sub.Str("url") == "nhsNumber" {
				nhs = sub.Str("valueIdentifier", "value")
			}
		}
	}
	id := uuid.NewString()
	header.Child("id").Value = id
	body, err := fhir.Marshal(root, format, false)
	if err != nil {
		t.Fatal(err)
	}
	return body, id, nhs
}

func TestPublishEndToEnd(t *testing.T) {
	dir := t.TempDir()
	e := startEMSD(t, dir, "")
	want := map[string]published{} // by message id

	publish := func(body []byte, contentType string) *http.Response {
		resp, b := e.post(t, "/STU3/Events/1/$process-message", body, map[string]string{"Content-Type": contentType, "fromASID": "200000000118"})
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		return resp
	}

	for _, ex := range validExamples {
		raw := fixture(t, "nems-examples/"+ex.file)
		for _, f := range []fhir.Format{fhir.FormatXML, fhir.FormatJSON} {
			body, id, nhs := withNewID(t, raw, f)
			ct := "application/fhir+xml"
			if f == fhir.FormatJSON {
				ct = "application/fhir+json"
			}
			resp := publish(body, ct)
			if got := resp.Header.Get("X-Event-Message-Id"); got != id {
				t.Fatalf("%s: x-event-message-id %q, want %q", ex.file, got, id)
			}
			want[id] = published{event: ex.event, nhs: nhs, contentType: ct}
		}
	}

	// A publisher's retry of the same message is stored once.
	retry := fixture(t, "nems-examples/vaccinations-1-new.xml")
	publish(retry, "application/fhir+xml")
	publish(retry, "application/fhir+xml")
	want["85c8a1c5-a8a1-41c9-bb99-20956fa66218"] = published{event: "vaccinations-1", nhs: "9912003888", contentType: "application/fhir+xml"}

	checkStream(t, e.natsURL(), want)
	checkAckRetention(t, e.natsURL())

	// A 202 survives SIGKILL: publish, kill at once, restart, find it.
	body, id, nhs := withNewID(t, fixture(t, "nems-examples/newborn-hearing-1-new.xml"), fhir.FormatXML)
	publish(body, "application/fhir+xml")
	want[id] = published{event: "newborn-hearing-1", nhs: nhs, contentType: "application/fhir+xml"}
	e.kill()
	e.start()
	checkStream(t, e.natsURL(), want)
}

// jetStreamAt connects to the NATS server at url for the rest of the test,
// with a context that bounds the checks made through it.
func jetStreamAt(t *testing.T, url string) (jetstream.JetStream, context.Context) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return js, ctx
}

// checkAckRetention expects mailbox acknowledgements to be remembered
// exactly as long as events are kept: no less, or a re-run fan-out of a
// stored event could deliver again; no more, since each costs memory.
func checkAckRetention(t *testing.T, url string) {
	t.Helper()
	js, ctx := jetStreamAt(t, url)
	ages := map[string]time.Duration{}
	for _, name := range []string{"EMS_EVENTS", "EMS_MESH_ACKS"} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		ages[name] = s.CachedInfo().Config.MaxAge
	}
	if ages["EMS_EVENTS"] == 0 || ages["EMS_MESH_ACKS"] != ages["EMS_EVENTS"] {
		t.Fatalf("acknowledgements kept %v, events %v: want the same, non-zero", ages["EMS_MESH_ACKS"], ages["EMS_EVENTS"])
	}
}

// checkStream reads the whole events stream and expects exactly the wanted
// messages, each once, on the right subject with the right headers.
func checkStream(t *testing.T, url string, want map[string]published) {
	t.Helper()
	js, ctx := jetStreamAt(t, url)
	stream, err := js.Stream(ctx, "EMS_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		id := m.Header.Get(fhir.HeaderMessageID)
		seen[id]++
		w, ok := want[id]
		if !ok {
			t.Errorf("unexpected message %s on %s", id, m.Subject)
			continue
		}
		wantSubject := fhir.EventSubject(w.event, w.nhs)
		if w.nhs == "" { // the test does not know every example's routing number
			wantSubject = fhir.EventSubjectPrefix + w.event + "."
		}
		if !strings.HasPrefix(m.Subject, wantSubject) {
			t.Errorf("%s: subject %s, want %s", id, m.Subject, wantSubject)
		}
		for k, v := range map[string]string{
			fhir.HeaderEventCode:     w.event,
			fhir.HeaderContentType:   w.contentType,
			fhir.HeaderPublisherASID: "200000000118",
			"Nats-Msg-Id":            id,
		} {
			if got := m.Header.Get(k); got != v {
				t.Errorf("%s: header %s = %q, want %q", id, k, got, v)
			}
		}
		_, subjectNHS, _ := fhir.ParseEventSubject(m.Subject)
		if got := m.Header.Get(fhir.HeaderNHSNumber); got != subjectNHS {
			t.Errorf("%s: NHS header %q disagrees with subject %s", id, got, m.Subject)
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("message %s stored %d times, want once", id, seen[id])
		}
	}
}

// TestPublishRejectionsEndToEnd sends the defective official examples and
// hostile bodies through the real binary and checks the answers.
func TestPublishRejectionsEndToEnd(t *testing.T) {
	e := startEMSD(t, t.TempDir(), "")
	tests := []struct {
		name   string
		body   []byte
		ct     string
		status int
		code   string
	}{
		{"Mod-11 routing NHS number", fixture(t, "nems-examples/BirthNotificationWithMother.xml"), "application/fhir+xml", 400, "INVALID_NHS_NUMBER"},
		{"+58:00 offset", fixture(t, "nems-examples/nipe-outcome-1-update.xml"), "", 400, "INVALID_VALUE"},
		{"draft event not enabled", fixture(t, "nems-examples/feature-DCH_Release_Changes/observations-new.xml"), "application/xml+fhir", 400, "INVALID_CODE_VALUE"},
		{"legacy EMS model", fixture(t, "nems-examples/stu3-fhir-assets/EMS-Bundle-PDS-BirthNotification.xml"), "application/fhir+xml", 400, ""},
		{"billion laughs", []byte(`<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><Bundle xmlns="http://hl7.org/fhir"><type value="&lol2;"/></Bundle>`), "application/fhir+xml", 400, "MESSAGE_NOT_WELL_FORMED"},
		{"JSON garbage", []byte(`{"resourceType":`), "application/fhir+json", 400, "MESSAGE_NOT_WELL_FORMED"},
		{"wrong media type", []byte("hello"), "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			headers := map[string]string{}
			if tt.ct != "" {
				headers["Content-Type"] = tt.ct
			}
			resp, body := e.post(t, "/STU3/Events/1/$process-message", tt.body, headers)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if !contains(string(body), "<OperationOutcome") || !contains(string(body), tt.code) {
				t.Fatalf("body: %s", body)
			}
		})
	}
}

// TestOversizeRefusedBeforeBody declares a body over 3 MiB and sends none of
// it: the answer must come from the headers alone. (Sending the body as well
// races the server's early close against the client's write.)
func TestOversizeRefusedBeforeBody(t *testing.T) {
	e := startEMSD(t, t.TempDir(), "")
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.baseURL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "POST /STU3/Events/1/$process-message HTTP/1.1\r\nHost: ems\r\nContent-Type: application/fhir+xml\r\nContent-Length: %d\r\n\r\n", 3<<20+1)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !contains(string(body), "INVALID_REQUEST_MESSAGE") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

func TestOperationalEndpoints(t *testing.T) {
	e := startEMSD(t, t.TempDir(), "")
	get := func(path string, headers map[string]string) (*http.Response, string) {
		req, err := http.NewRequest(http.MethodGet, e.baseURL()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, b := do(t, req)
		return resp, string(b)
	}
	if resp, body := get("/healthz", nil); resp.StatusCode != 200 {
		t.Fatalf("healthz %d %s", resp.StatusCode, body)
	}
	if resp, body := get("/readyz", nil); resp.StatusCode != 200 {
		t.Fatalf("readyz %d %s", resp.StatusCode, body)
	}
	resp, body := get("/STU3/metadata", map[string]string{"Accept": "application/fhir+json"})
	if resp.StatusCode != 200 || !contains(resp.Header.Get("Content-Type"), "application/fhir+json") ||
		!contains(body, `"resourceType": "CapabilityStatement"`) && !contains(body, `"resourceType":"CapabilityStatement"`) || !contains(body, "vaccinations-1") {
		t.Fatalf("metadata %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if strings.Contains(body, "pds-change-of-gp-1") {
		t.Error("metadata lists a PDS event as publishable")
	}
	// One accepted and one rejected publish show in the metrics.
	e.post(t, "/STU3/Events/1/$process-message", fixture(t, "nems-examples/vaccinations-1-new.xml"), map[string]string{"Content-Type": "application/fhir+xml"})
	e.post(t, "/STU3/Events/1/$process-message", fixture(t, "nems-examples/nipe-outcome-1-update.xml"), nil)
	_, metrics := get("/metrics", nil)
	for _, want := range []string{
		`ems_publish_messages_total{event="vaccinations-1",outcome="accepted"} 1`,
		`ems_publish_messages_total{event="nipe-outcome-1",outcome="rejected"} 1`,
		"ems_publish_duration_seconds_bucket",
	} {
		if !contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
