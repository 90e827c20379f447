// Package testnats starts a real embedded JetStream server in a test's temp
// dir, so delivery's tests exercise NATS rather than a mock of it.
package testnats

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
)

// Server is a running embedded server and an in-process connection.
type Server struct {
	Srv *server.Server
	NC  *nats.Conn
	JS  jetstream.JetStream
	Dir string
}

// Start runs a JetStream server whose store is in dir ("" = a new temp dir).
func Start(t testing.TB, dir string) *Server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	srv, err := server.NewServer(&server.Options{JetStream: true, StoreDir: dir, DontListen: true, NoSigs: true, NoLog: true, MaxPayload: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	s := &Server{Srv: srv, Dir: dir}
	t.Cleanup(s.Stop)
	s.NC, s.JS = connect(t, "", nats.InProcessServer(srv))
	return s
}

// Stop closes the connection and shuts the server down.
func (s *Server) Stop() {
	s.NC.Close()
	s.Srv.Shutdown()
	s.Srv.WaitForShutdown()
}

// Connect opens another in-process connection to s, closed at cleanup: a
// second node's own connection.
func (s *Server) Connect(t testing.TB) jetstream.JetStream {
	t.Helper()
	_, js := connect(t, "", nats.InProcessServer(s.Srv))
	return js
}

// Connect opens a connection to the server at url, closed at cleanup.
func Connect(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	_, js := connect(t, url)
	return js
}

func connect(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Bolt opens a bbolt file in a temp dir, closed at cleanup.
func Bolt(t testing.TB) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(t.TempDir()+"/ems.db", 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}
