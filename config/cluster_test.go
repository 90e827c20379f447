package config

import "testing"

func TestClusterDefaultsAndLoad(t *testing.T) {
	c, err := Load([]byte(`
nats:
  urls: [nats://10.0.0.1:4222, nats://10.0.0.2:4222, nats://10.0.0.3:4222]
cluster:
  enabled: true
  node_name: ems-a
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Cluster{Enabled: true, NodeName: "ems-a", Replicas: 3, ChangeLogStream: "EMS_SUBSCRIPTION_LOG", SnapshotEvery: 10000}
	if c.Cluster != want {
		t.Errorf("cluster = %+v, want %+v", c.Cluster, want)
	}
	if d := Default().Cluster; d.Enabled {
		t.Errorf("cluster mode on by default: %+v", d)
	}
	for _, doc := range []string{
		"nats: {url: nats://a:4222}\ncluster: {enabled: true, node_name: 'a b'}",
		"nats: {url: nats://a:4222}\ncluster: {enabled: true, change_log_stream: EMS_EVENTS}",
		"nats: {url: nats://a:4222}\ncluster: {enabled: true, snapshot_every: -1}",
	} {
		if _, err := Load([]byte(doc)); err == nil {
			t.Errorf("accepted %q", doc)
		}
	}
}
