package subscription

import "context"

type eventSeqKey struct{}

// ContextWithEventSeq carries the stream sequence of the event being
// fanned out (its EMS_EVENTS sequence) to what the fan-out calls with ctx,
// so that a demographics store can tell an older event from a newer one
// without the delivery interfaces growing a parameter. JetStream numbers
// from 1, so 0 means "no sequence" and leaves ctx as it is.
func ContextWithEventSeq(ctx context.Context, seq uint64) context.Context {
	if seq == 0 {
		return ctx
	}
	return context.WithValue(ctx, eventSeqKey{}, seq)
}

// EventSeqFrom is the sequence ContextWithEventSeq put in ctx, if any.
func EventSeqFrom(ctx context.Context) (uint64, bool) {
	seq, ok := ctx.Value(eventSeqKey{}).(uint64)
	return seq, ok
}
