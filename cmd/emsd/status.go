package main

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/admin"
	"github.com/ems-broker/ems/delivery"
	"github.com/ems-broker/ems/delivery/mesh"
)

// serviceStatus is the answer of GET /admin/v1/status: what `emsctl status`
// shows an operator at a glance.
type serviceStatus struct {
	Version       string          `json:"version"`
	Started       time.Time       `json:"started"`
	UptimeSeconds int64           `json:"uptimeSeconds"`
	JetStream     jetStreamStatus `json:"jetstream"`
	Streams       []streamStatus  `json:"streams"`
	Consumers     []consumerLag   `json:"consumers"`
	Inboxes       []inboxDepth    `json:"inboxes"`
	DeadLetters   uint64          `json:"deadLetters"`
	// Cluster is present in cluster mode: nodes, NATS, change log lag.
	Cluster *clusterStatus `json:"cluster,omitempty"`
}

type jetStreamStatus struct {
	OK        bool   `json:"ok"`
	Error     string `json:"error,omitempty"`
	Memory    uint64 `json:"memoryBytes"`
	Store     uint64 `json:"storeBytes"`
	Streams   int    `json:"streams"`
	Consumers int    `json:"consumers"`
}

type streamStatus struct {
	Name      string `json:"name"`
	Messages  uint64 `json:"messages"`
	Bytes     uint64 `json:"bytes"`
	FirstSeq  uint64 `json:"firstSeq"`
	LastSeq   uint64 `json:"lastSeq"`
	Consumers int    `json:"consumers"`
}

type consumerLag struct {
	Stream      string `json:"stream"`
	Name        string `json:"name"`
	Pending     uint64 `json:"pending"`     // in the stream, not yet delivered to it
	AckPending  int    `json:"ackPending"`  // delivered, not yet acknowledged
	Redelivered int    `json:"redelivered"` // delivered more than once, not yet acknowledged
}

type inboxDepth struct {
	Mailbox  string `json:"mailbox"`
	Messages uint64 `json:"messages"`
}

// registerStatus mounts GET /admin/v1/status. It reads JetStream afresh on
// every call: an operator asking for status wants now, not a cached view.
func registerStatus(srv *admin.Server, js jetstream.JetStream, version string, started time.Time, cluster *clusterNode) {
	srv.Handle("GET /admin/v1/status", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		st := collectStatus(ctx, js, version, started, time.Now())
		st.Cluster = cluster.status(ctx)
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	}))
}

func collectStatus(ctx context.Context, js jetstream.JetStream, version string, started, now time.Time) serviceStatus {
	st := serviceStatus{Version: version, Started: started.UTC(), UptimeSeconds: int64(now.Sub(started).Seconds()),
		Streams: []streamStatus{}, Consumers: []consumerLag{}, Inboxes: []inboxDepth{}}
	acct, err := js.AccountInfo(ctx)
	if err != nil {
		// Report, not fail: a status page must work when JetStream does not.
		st.JetStream.Error = err.Error()
		return st
	}
	st.JetStream = jetStreamStatus{OK: true, Memory: acct.Memory, Store: acct.Store, Streams: acct.Streams, Consumers: acct.Consumers}
	lister := js.ListStreams(ctx)
	for info := range lister.Info() {
		s := streamStatus{Name: info.Config.Name, Messages: info.State.Msgs, Bytes: info.State.Bytes,
			FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq, Consumers: info.State.Consumers}
		st.Streams = append(st.Streams, s)
		switch {
		case slices.Contains(info.Config.Subjects, delivery.DeadSubjectPrefix+">"):
			st.DeadLetters += info.State.Msgs
		case slices.Contains(info.Config.Subjects, mesh.SubjectPrefix+">"):
			st.Inboxes = inboxDepths(ctx, js, info.Config.Name)
		}
		stream, err := js.Stream(ctx, info.Config.Name)
		if err != nil {
			continue
		}
		cl := stream.ListConsumers(ctx)
		for ci := range cl.Info() {
			st.Consumers = append(st.Consumers, consumerLag{Stream: info.Config.Name, Name: ci.Name,
				Pending: ci.NumPending, AckPending: ci.NumAckPending, Redelivered: ci.NumRedelivered})
		}
	}
	if err := lister.Err(); err != nil {
		st.JetStream.Error = "listing streams: " + err.Error()
	}
	sort.Slice(st.Streams, func(i, j int) bool { return st.Streams[i].Name < st.Streams[j].Name })
	sort.Slice(st.Consumers, func(i, j int) bool {
		a, b := st.Consumers[i], st.Consumers[j]
		return a.Stream < b.Stream || a.Stream == b.Stream && a.Name < b.Name
	})
	return st
}

// inboxDepths counts the unacknowledged messages of each built-in MESH
// mailbox: one subject per message, ems.mesh.<mailbox>.<message-id>.
func inboxDepths(ctx context.Context, js jetstream.JetStream, name string) []inboxDepth {
	out := []inboxDepth{}
	stream, err := js.Stream(ctx, name)
	if err != nil {
		return out
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(mesh.SubjectPrefix+">"))
	if err != nil {
		return out
	}
	by := map[string]uint64{}
	for subj, n := range info.State.Subjects {
		rest := strings.TrimPrefix(subj, mesh.SubjectPrefix)
		if i := strings.LastIndexByte(rest, '.'); i > 0 {
			by[rest[:i]] += n
		}
	}
	for mb, n := range by {
		out = append(out, inboxDepth{Mailbox: mb, Messages: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Mailbox < out[j].Mailbox })
	return out
}
