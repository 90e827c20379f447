package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/ems-broker/ems/config"
	"github.com/ems-broker/ems/delivery"
	"github.com/ems-broker/ems/subscription"
	"github.com/ems-broker/ems/subscription/replog"
)

// Cluster mode (docs/cluster.md): the node's subscription store writes
// through the replicated change log, and every node announces its applied
// sequence in a KV bucket so that any node's status page shows them all.

// nodesBucket holds one key per live node, refreshed every heartbeat and
// expired by the bucket's TTL when a node stops refreshing it.
const (
	nodesBucket    = "EMS_NODES"
	nodesHeartbeat = 2 * time.Second
	nodesTTL       = 15 * time.Second
)

// clusterConfig applies cluster mode to the rest of the configuration:
// every stream gets cluster.replicas, and the node is named.
func clusterConfig(cfg config.Config) config.Config {
	if !cfg.Cluster.Enabled {
		return cfg
	}
	cfg.NATS.EventsStream.Replicas = cfg.Cluster.Replicas
	if cfg.Cluster.NodeName == "" {
		cfg.Cluster.NodeName, _ = os.Hostname()
	}
	return cfg
}

// deliveryLanes turns webhook lanes on in cluster mode: each endpoint's
// jobs are worked by the one node holding its lane's lease, so its
// concurrency limit, breaker and per-patient ordering hold cluster-wide.
func deliveryLanes(cfg config.Config) *delivery.LaneOptions {
	if !cfg.Cluster.Enabled {
		return nil
	}
	return &delivery.LaneOptions{Node: cfg.Cluster.NodeName, Replicas: cfg.Cluster.Replicas, EventsStream: cfg.NATS.EventsStream.Name}
}

// clusterNode is this node's part in a cluster; nil when cluster mode is
// off (its methods accept a nil receiver).
type clusterNode struct {
	name    string
	started time.Time
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *replog.Log
	store   *subscription.Store
	nodes   jetstream.KeyValue
	stream  string
}

// nodeRecord is what a node announces in the nodes bucket.
type nodeRecord struct {
	Name     string    `json:"name"`
	Applied  uint64    `json:"applied"`
	Started  time.Time `json:"started"`
	Updated  time.Time `json:"updated"`
	Server   string    `json:"natsServer"`
	Follower string    `json:"followerError,omitempty"`
}

// startCluster opens the change log, brings the local subscription view up
// to date (restoring a snapshot when it is behind one) and starts
// following the log and announcing the node. It returns once the view is
// complete: serving before that would answer reads from a partial view.
func startCluster(ctx context.Context, cfg config.Config, nc *nats.Conn, js jetstream.JetStream, st storeOpener, log *slog.Logger) (*clusterNode, func(), error) {
	if !cfg.Cluster.Enabled {
		return nil, func() {}, nil
	}
	k := cfg.Cluster
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	fail := func(err error) (*clusterNode, func(), error) { cancel(); return nil, nil, err }
	l, err := replog.Open(ctx, replog.Options{JS: js, Stream: k.ChangeLogStream, Replicas: k.Replicas,
		Node: k.NodeName, SnapshotEvery: k.SnapshotEvery, Logger: log})
	if err != nil {
		return fail(err)
	}
	store, err := st(l)
	if err != nil {
		return fail(err)
	}
	nodes, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: nodesBucket,
		Description: "emsd nodes and their applied change log sequence", TTL: nodesTTL, Replicas: k.Replicas})
	if err != nil {
		return fail(fmt.Errorf("creating %s bucket (R%d): %w", nodesBucket, k.Replicas, err))
	}
	c := &clusterNode{name: k.NodeName, started: time.Now(), nc: nc, js: js, log: l, store: store, nodes: nodes, stream: k.ChangeLogStream}
	ready, err := l.Start(runCtx, store)
	if err != nil {
		return fail(fmt.Errorf("catching up on the subscription change log: %w", err))
	}
	log.Info("subscription view caught up", "node", c.name, "restored_snapshot", ready.Restored,
		"applied", ready.Applied, "ms", ready.Duration.Milliseconds())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.announce(runCtx, log)
	}()
	return c, func() {
		cancel()
		<-done
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer dcancel()
		_ = nodes.Delete(dctx, c.name)
	}, nil
}

// storeOpener opens the subscription store with the change log as its
// committer.
type storeOpener func(subscription.Committer) (*subscription.Store, error)

// announce refreshes this node's record until ctx ends.
func (c *clusterNode) announce(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(nodesHeartbeat)
	defer t.Stop()
	for {
		rec := nodeRecord{Name: c.name, Applied: c.log.Applied(), Started: c.started.UTC(), Updated: time.Now().UTC(), Server: c.nc.ConnectedServerName()}
		if err := c.log.Err(); err != nil {
			rec.Follower = err.Error()
		}
		body, _ := json.Marshal(rec)
		pctx, cancel := context.WithTimeout(ctx, nodesHeartbeat)
		if _, err := c.nodes.Put(pctx, c.name, body); err != nil && ctx.Err() == nil {
			log.Warn("announcing node", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Store is the subscription store writing through the change log, or nil.
func (c *clusterNode) Store() *subscription.Store {
	if c == nil {
		return nil
	}
	return c.store
}

// Ready fails when the change log follower has stopped: the view would
// fall further behind with every write.
func (c *clusterNode) Ready() error {
	if c == nil {
		return nil
	}
	if err := c.log.Err(); err != nil {
		return fmt.Errorf("subscription change log follower stopped: %w", err)
	}
	return nil
}

// clusterStatus is the cluster part of GET /admin/v1/status.
type clusterStatus struct {
	Node      string            `json:"node"`
	NATS      natsClusterStatus `json:"nats"`
	ChangeLog changeLogStatus   `json:"changeLog"`
	Nodes     []nodeStatus      `json:"nodes"`
	Streams   []streamPlacement `json:"streams"`
	// Lanes are the webhook lanes each node works (node → lanes), read
	// from the lease bucket; a lane held by no node is under "".
	Lanes map[string][]int `json:"lanes"`
	Error string           `json:"error,omitempty"`
}

type natsClusterStatus struct {
	ConnectedURL    string   `json:"connectedUrl"`
	ConnectedServer string   `json:"connectedServer"`
	Cluster         string   `json:"cluster"`
	KnownServers    []string `json:"knownServers"`
	RTTMicros       int64    `json:"rttMicros"`
}

type changeLogStatus struct {
	Stream   string `json:"stream"`
	FirstSeq uint64 `json:"firstSeq"`
	LastSeq  uint64 `json:"lastSeq"`
}

type nodeStatus struct {
	Name       string    `json:"name"`
	Applied    uint64    `json:"applied"`
	Lag        uint64    `json:"lag"`
	Started    time.Time `json:"started"`
	LastSeen   time.Time `json:"lastSeen"`
	NATSServer string    `json:"natsServer"`
	Error      string    `json:"error,omitempty"`
}

type streamPlacement struct {
	Name     string      `json:"name"`
	Leader   string      `json:"leader"`
	Replicas []peerState `json:"replicas"`
}

type peerState struct {
	Name    string `json:"name"`
	Current bool   `json:"current"`
	Offline bool   `json:"offline,omitempty"`
	Lag     uint64 `json:"lag,omitempty"`
}

// status reads the cluster state afresh: NATS connection, change log
// bounds, every announced node and where each stream's replicas are.
func (c *clusterNode) status(ctx context.Context) *clusterStatus {
	if c == nil {
		return nil
	}
	st := &clusterStatus{Node: c.name, Nodes: []nodeStatus{}, Streams: []streamPlacement{}}
	st.NATS = natsClusterStatus{ConnectedURL: c.nc.ConnectedUrlRedacted(), ConnectedServer: c.nc.ConnectedServerName(),
		Cluster: c.nc.ConnectedClusterName(), KnownServers: c.nc.Servers()}
	if rtt, err := c.nc.RTT(); err == nil {
		st.NATS.RTTMicros = rtt.Microseconds()
	}
	last, first, err := c.log.Last(ctx)
	if err != nil {
		st.Error = err.Error()
	}
	st.ChangeLog = changeLogStatus{Stream: c.stream, FirstSeq: first, LastSeq: last}
	if keys, err := c.nodes.ListKeys(ctx); err == nil {
		for k := range keys.Keys() {
			e, err := c.nodes.Get(ctx, k)
			if err != nil {
				continue
			}
			var rec nodeRecord
			if json.Unmarshal(e.Value(), &rec) != nil {
				continue
			}
			ns := nodeStatus{Name: rec.Name, Applied: rec.Applied, Started: rec.Started, LastSeen: rec.Updated, NATSServer: rec.Server, Error: rec.Follower}
			if rec.Name == c.name {
				ns.Applied = c.log.Applied() // this node's is exact
			}
			if last > ns.Applied {
				ns.Lag = last - ns.Applied
			}
			st.Nodes = append(st.Nodes, ns)
		}
	} else if !errors.Is(err, jetstream.ErrNoKeysFound) {
		st.Error = "listing nodes: " + err.Error()
	}
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].Name < st.Nodes[j].Name })
	lister := c.js.ListStreams(ctx)
	for info := range lister.Info() {
		p := streamPlacement{Name: info.Config.Name, Replicas: []peerState{}}
		if info.Cluster != nil {
			p.Leader = info.Cluster.Leader
			if p.Leader != "" {
				p.Replicas = append(p.Replicas, peerState{Name: p.Leader, Current: true})
			}
			for _, r := range info.Cluster.Replicas {
				p.Replicas = append(p.Replicas, peerState{Name: r.Name, Current: r.Current, Offline: r.Offline, Lag: r.Lag})
			}
		}
		st.Streams = append(st.Streams, p)
	}
	sort.Slice(st.Streams, func(i, j int) bool { return st.Streams[i].Name < st.Streams[j].Name })
	st.Lanes = c.lanes(ctx)
	return st
}

// lanes reads who holds each webhook lane's lease.
func (c *clusterNode) lanes(ctx context.Context) map[string][]int {
	out, err := delivery.LaneHolders(ctx, c.js, "")
	if err != nil {
		return map[string][]int{}
	}
	return out
}

// clusterStore opens the node's subscription store in db writing through
// the change log.
func clusterStore(db *bolt.DB) storeOpener {
	return func(c subscription.Committer) (*subscription.Store, error) {
		return subscription.NewStore(subscription.StoreOptions{DB: db, Committer: c})
	}
}
