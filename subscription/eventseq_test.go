package subscription

import (
	"context"
	"testing"
)

func TestEventSeqContext(t *testing.T) {
	ctx := context.Background()
	if seq, ok := EventSeqFrom(ctx); ok || seq != 0 {
		t.Errorf("bare context: %d %v", seq, ok)
	}
	if seq, ok := EventSeqFrom(ContextWithEventSeq(ctx, 0)); ok || seq != 0 {
		t.Errorf("sequence 0: %d %v; want none", seq, ok)
	}
	inner := ContextWithEventSeq(ContextWithEventSeq(ctx, 7), 42)
	if seq, ok := EventSeqFrom(inner); !ok || seq != 42 {
		t.Errorf("got %d %v, want 42", seq, ok)
	}
}
