package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// natsOptions is what emsd needs to know to reach NATS.
type natsOptions struct {
	// URLs of an external NATS cluster; empty starts the embedded server.
	URLs            []string
	CredentialsFile string
	Token           string

	// Embedded server settings.
	StoreDir     string
	ClientListen string // host:port for TCP clients; empty: in-process only
	SyncAlways   bool
	SyncInterval time.Duration
	MaxMemory    int64
	MaxStore     int64
}

// natsConn is a connection and, in embedded mode, the server behind it.
type natsConn struct {
	nc  *nats.Conn
	srv *server.Server // nil when external
	// dialOpts and urls open further connections (dial) the way nc was.
	dialOpts []nats.Option
	urls     string
	extra    []*nats.Conn
}

// dial opens one more connection to the same server(s). nats.Conn
// serialises every publish and request on one mutex and one socket, so the
// publish path, whose latency callers see, gets its own rather than
// queueing behind the fan-out's and the MESH API's traffic.
func (c *natsConn) dial(name string) (*nats.Conn, error) {
	opts := append(slices.Clone(c.dialOpts), nats.Name(name))
	var (
		nc  *nats.Conn
		err error
	)
	if c.srv != nil {
		nc, err = nats.Connect("", append(opts, nats.InProcessServer(c.srv))...)
	} else {
		nc, err = nats.Connect(c.urls, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("opening NATS connection %s: %w", name, err)
	}
	c.extra = append(c.extra, nc)
	return nc, nil
}

// Close drains the connections and stops the embedded server.
func (c *natsConn) Close() {
	for _, nc := range c.extra {
		_ = nc.Drain()
		nc.Close()
	}
	if c.nc != nil {
		_ = c.nc.Drain()
		c.nc.Close()
	}
	if c.srv != nil {
		c.srv.Shutdown()
		c.srv.WaitForShutdown()
	}
}

// connectNATS starts the embedded JetStream server (or dials the external
// one) and returns a ready connection.
func connectNATS(o natsOptions, log *slog.Logger) (*natsConn, error) {
	connOpts := []nats.Option{
		nats.Name("emsd"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrl()) }),
	}
	if len(o.URLs) > 0 {
		if o.CredentialsFile != "" {
			connOpts = append(connOpts, nats.UserCredentials(o.CredentialsFile))
		}
		if o.Token != "" {
			connOpts = append(connOpts, nats.Token(o.Token))
		}
		urls := strings.Join(o.URLs, ",")
		nc, err := nats.Connect(urls, connOpts...)
		if err != nil {
			return nil, fmt.Errorf("connecting to NATS %v: %w", o.URLs, err)
		}
		return &natsConn{nc: nc, dialOpts: connOpts, urls: urls}, nil
	}

	sopts := &server.Options{
		ServerName:         "emsd-embedded",
		JetStream:          true,
		StoreDir:           o.StoreDir,
		SyncAlways:         o.SyncAlways,
		SyncInterval:       o.SyncInterval,
		JetStreamMaxMemory: o.MaxMemory,
		JetStreamMaxStore:  o.MaxStore,
		NoSigs:             true, // signals belong to main
		NoLog:              true,
		DontListen:         o.ClientListen == "",
		MaxPayload:         8 << 20, // a 3 MiB bundle plus headers, with room
	}
	if o.ClientListen != "" {
		host, port, err := net.SplitHostPort(o.ClientListen)
		if err != nil {
			return nil, fmt.Errorf("nats.embedded.client_listen %q: %w", o.ClientListen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("nats.embedded.client_listen %q: port: %w", o.ClientListen, err)
		}
		sopts.Host, sopts.Port = host, p
		if p == 0 {
			sopts.Port = server.RANDOM_PORT
		}
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("configuring embedded NATS server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded NATS server did not become ready within 30s")
	}
	if o.ClientListen != "" {
		log.Info("embedded NATS accepting TCP clients", "url", srv.ClientURL())
	}
	nc, err := nats.Connect("", append(connOpts, nats.InProcessServer(srv))...)
	if err != nil {
		srv.Shutdown()
		return nil, fmt.Errorf("connecting in-process to embedded NATS: %w", err)
	}
	return &natsConn{nc: nc, srv: srv, dialOpts: connOpts}, nil
}
