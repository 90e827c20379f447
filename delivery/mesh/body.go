package mesh

import (
	"fmt"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go"
)

// HeaderBodyEncoding names how an inbox message's body is stored; it never
// reaches a MESH client, which always gets the bundle as published.
//
// Bodies are stored S2-compressed: a JetStream file store reads a whole
// 4 MiB block to serve one message, so while a backlog drains in mailbox
// order the inbox's resident memory follows its stored bytes
// (docs/memory.md), and the bundles compress about 3.6×. A message without
// the header (stored by an earlier version) is read as it is.
const HeaderBodyEncoding = "Ems-Body-Encoding"

const bodyS2 = "s2"

// maxStoredBody bounds what a stored body may claim to decode to, so a
// damaged length prefix cannot make a retrieve allocate gigabytes. Published
// bundles are capped far below it (publish.max_body_bytes).
const maxStoredBody = 64 << 20

// EncodeBody returns body as the inbox stores it and the value for
// HeaderBodyEncoding.
func EncodeBody(body []byte) (stored []byte, encoding string) {
	return s2.Encode(nil, body), bodyS2
}

// decodeBody returns the body of a stored inbox message as it was published.
func decodeBody(h nats.Header, data []byte) ([]byte, error) {
	switch enc := h.Get(HeaderBodyEncoding); enc {
	case "":
		return data, nil
	case bodyS2:
		n, err := s2.DecodedLen(data)
		if err != nil {
			return nil, fmt.Errorf("decoding the stored body: %w", err)
		}
		if n > maxStoredBody {
			return nil, fmt.Errorf("decoding the stored body: it claims %d bytes, more than %d", n, maxStoredBody)
		}
		body, err := s2.Decode(make([]byte, n), data)
		if err != nil {
			return nil, fmt.Errorf("decoding the stored body: %w", err)
		}
		return body, nil
	default:
		return nil, fmt.Errorf("decoding the stored body: unknown encoding %q", enc)
	}
}
