package delivery

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/subscription"
)

// Subjects and headers of delivery jobs.
const (
	// JobSubjectPrefix starts webhook job subjects:
	// ems.deliveries.hook.<lane>.<endpoint-token>.<nhs-number|none>
	// (lanes.go). Jobs stored before lanes have no lane token.
	JobSubjectPrefix = "ems.deliveries."
	// DeadSubjectPrefix starts dead-letter subjects: ems.dead.<channel>.<endpoint-token>.
	DeadSubjectPrefix = "ems.dead."

	HeaderJobID      = "Ems-Job-Id"
	HeaderChannel    = "Ems-Channel"
	HeaderEndpoint   = "Ems-Endpoint"
	HeaderPayload    = "Ems-Payload"
	HeaderMatch      = "Ems-Match"
	HeaderHookHeader = "Ems-Hook-Header"
	HeaderGeneration = "Ems-Generation"
	HeaderEventSeq   = "Ems-Event-Seq"

	HeaderDeadReason   = "Ems-Dead-Reason"
	HeaderDeadStatus   = "Ems-Dead-Status"
	HeaderDeadAttempts = "Ems-Dead-Attempts"
	HeaderDeadAt       = "Ems-Dead-At"
)

// MatchInfo explains why a job exists: one matched subscription.
type MatchInfo struct {
	Subscription string `json:"subscription"`
	Kind         string `json:"kind"`
	Rule         string `json:"rule,omitempty"`
	Organisation string `json:"organisation,omitempty"`
	Tag          string `json:"tag,omitempty"`
}

func matchInfo(m subscription.Match) MatchInfo {
	return MatchInfo{Subscription: m.SubscriptionID, Kind: m.Kind.String(), Rule: string(m.RuleType),
		Organisation: m.OrganisationCode, Tag: m.Tag}
}

// PartnerID is the Mex-PartnerID of a delivery: sub|tag for each matched
// subscription with a tag, joined by ~~~; "" (header omitted) when none has
// a tag (subscriptions.md §6.8).
func PartnerID(ms []MatchInfo) string {
	var parts []string
	for _, m := range ms {
		if m.Tag != "" {
			parts = append(parts, m.Subscription+"|"+m.Tag)
		}
	}
	return strings.Join(parts, "~~~")
}

// EndpointToken names an endpoint in subjects and ids: a hash, because a
// URL cannot be a subject token.
func EndpointToken(channel, endpoint string) string {
	h := sha256.Sum256([]byte(channel + "\x00" + endpoint))
	return hex.EncodeToString(h[:8])
}

// JobID identifies the delivery of one event to one endpoint; it is also the
// Nats-Msg-Id, the webhook-id and the id duplicates share.
func JobID(eventID, channel, endpoint string) string {
	return eventID + "." + EndpointToken(channel, endpoint)
}

// Job is one event to deliver to one endpoint.
type Job struct {
	ID         string
	Channel    string
	Endpoint   string
	Payload    string
	Matches    []MatchInfo
	Headers    []string // channel.header values
	Generation int      // bumped by each replay
	EventCode  string
	NHSNumber  string
	EventID    string
	EventSeq   uint64
	ReceivedAt string
	// ContentType is the format of Body as published.
	ContentType string
	Body        []byte

	// unordered: a job stored before lanes, worked by any node in
	// cluster mode, so outside the ordering index.
	unordered bool
}

// Subject is the job's subject on the deliveries stream.
func (j *Job) Subject() string {
	nhs := j.NHSNumber
	if nhs == "" {
		nhs = fhir.NoNHSNumber
	}
	tok := EndpointToken(j.Channel, j.Endpoint)
	return JobSubjectPrefix + "hook." + strconv.Itoa(laneOfToken(tok)) + "." + tok + "." + nhs
}

// OrderKey groups the jobs that must be delivered in publish order: one
// endpoint, one patient. Jobs naming no patient have no order.
func (j *Job) OrderKey() string {
	if j.NHSNumber == "" {
		return ""
	}
	return EndpointToken(j.Channel, j.Endpoint) + "." + j.NHSNumber
}

// Msg encodes the job; msg id is the job id plus the replay generation.
func (j *Job) Msg() *nats.Msg {
	h := nats.Header{}
	h.Set(HeaderJobID, j.ID)
	h.Set(HeaderChannel, j.Channel)
	h.Set(HeaderEndpoint, j.Endpoint)
	if j.Payload != "" {
		h.Set(HeaderPayload, j.Payload)
	}
	mj, _ := json.Marshal(j.Matches)
	h.Set(HeaderMatch, string(mj))
	for _, v := range j.Headers {
		h.Add(HeaderHookHeader, v)
	}
	h.Set(HeaderGeneration, strconv.Itoa(j.Generation))
	h.Set(fhir.HeaderEventCode, j.EventCode)
	h.Set(fhir.HeaderNHSNumber, j.NHSNumber)
	h.Set(fhir.HeaderMessageID, j.EventID)
	h.Set(fhir.HeaderReceivedAt, j.ReceivedAt)
	h.Set(fhir.HeaderContentType, j.ContentType)
	h.Set(HeaderEventSeq, strconv.FormatUint(j.EventSeq, 10))
	msgID := j.ID
	if j.Generation > 0 {
		msgID += "#" + strconv.Itoa(j.Generation)
	}
	h.Set(nats.MsgIdHdr, msgID)
	return &nats.Msg{Subject: j.Subject(), Header: h, Data: j.Body}
}

// DecodeJob reads a job back from its headers and body.
func DecodeJob(h nats.Header, body []byte) (*Job, error) {
	j := &Job{ID: h.Get(HeaderJobID), Channel: h.Get(HeaderChannel), Endpoint: h.Get(HeaderEndpoint),
		Payload: h.Get(HeaderPayload), Headers: h.Values(HeaderHookHeader),
		EventCode: h.Get(fhir.HeaderEventCode), NHSNumber: h.Get(fhir.HeaderNHSNumber),
		EventID: h.Get(fhir.HeaderMessageID), ReceivedAt: h.Get(fhir.HeaderReceivedAt),
		ContentType: h.Get(fhir.HeaderContentType), Body: body}
	if j.ID == "" || j.Endpoint == "" {
		return nil, fmt.Errorf("delivery job without id or endpoint")
	}
	if err := json.Unmarshal([]byte(h.Get(HeaderMatch)), &j.Matches); err != nil {
		return nil, fmt.Errorf("job %s: match explanation: %w", j.ID, err)
	}
	j.Generation, _ = strconv.Atoi(h.Get(HeaderGeneration))
	j.EventSeq, _ = strconv.ParseUint(h.Get(HeaderEventSeq), 10, 64)
	return j, nil
}

func jsonMarshal(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
