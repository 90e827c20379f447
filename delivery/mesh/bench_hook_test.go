package mesh

import (
	"context"
	"testing"
)

func benchStartIndex(b *testing.B, ctx context.Context, s *Store) { runIndex(b, s) }
