package config

import "regexp"

// Cluster configures scale-out: several emsd nodes sharing an external NATS
// JetStream cluster. Subscription writes go through a replicated change log
// and every node keeps its bbolt as a materialised view of it (see
// docs/cluster.md).
type Cluster struct {
	// Enabled turns cluster mode on; it needs an external NATS (nats.url
	// or nats.urls) and never starts the embedded server.
	Enabled bool `yaml:"enabled"`
	// NodeName identifies this node in status and logs; empty means the
	// host name. Two nodes must not share one.
	NodeName string `yaml:"node_name"`
	// Replicas is the copy count of every stream emsd creates in cluster
	// mode (events, deliveries, inboxes, change log); it overrides
	// nats.events_stream.replicas.
	Replicas int `yaml:"replicas"`
	// ChangeLogStream is the JetStream stream holding subscription writes.
	ChangeLogStream string `yaml:"change_log_stream"`
	// SnapshotEvery is how many change-log entries pass between snapshots
	// of the subscription view; older entries are then purged, so a new
	// node's rebuild reads one snapshot plus at most two intervals of log.
	// Zero keeps the whole log and takes no snapshots.
	SnapshotEvery int `yaml:"snapshot_every"`
}

// DefaultCluster is cluster mode off, with the values it uses when turned on.
func DefaultCluster() Cluster {
	return Cluster{Replicas: 3, ChangeLogStream: "EMS_SUBSCRIPTION_LOG", SnapshotEvery: 10000}
}

var nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

func (c Config) validateCluster(v *validator) {
	k := c.Cluster
	if !k.Enabled {
		return
	}
	if !c.NATS.External() {
		v.add("cluster.enabled", "cluster mode needs an external NATS cluster (set nats.url or nats.urls)")
	}
	if k.NodeName != "" && !nodeNameRE.MatchString(k.NodeName) {
		v.add("cluster.node_name", "letters, digits, '.', '-' and '_' (at most 64), got %q", k.NodeName)
	}
	if k.Replicas < 1 || k.Replicas > 5 {
		v.add("cluster.replicas", "must be 1-5 (JetStream's limit), got %d", k.Replicas)
	}
	if !streamNameRE.MatchString(k.ChangeLogStream) {
		v.add("cluster.change_log_stream", "a stream name is letters, digits, '-' and '_', got %q", k.ChangeLogStream)
	}
	if k.ChangeLogStream == c.NATS.EventsStream.Name {
		v.add("cluster.change_log_stream", "must differ from nats.events_stream.name (%q)", k.ChangeLogStream)
	}
	if k.SnapshotEvery < 0 {
		v.add("cluster.snapshot_every", "must not be negative, got %d", k.SnapshotEvery)
	}
}
