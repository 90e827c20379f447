package delivery

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ems-broker/ems/delivery/mesh"
	"github.com/ems-broker/ems/subscription"
)

// DeadLetter is one job in the dead-letter stream.
type DeadLetter struct {
	Seq      uint64    `json:"seq"`
	JobID    string    `json:"jobId"`
	EventID  string    `json:"eventId"`
	Endpoint string    `json:"endpoint"`
	NHS      string    `json:"nhsNumber,omitempty"`
	Reason   string    `json:"reason"`
	Status   int       `json:"lastStatus,omitempty"`
	Error    string    `json:"lastError,omitempty"`
	Attempts int       `json:"attempts"`
	At       time.Time `json:"at"`
	job      *Job
}

// Replayer lists dead letters and puts them back on the deliveries stream.
type Replayer struct {
	JS            jetstream.JetStream
	Dead          jetstream.Stream
	Log           *Log
	Subscriptions SubscriptionReader
	Now           func() time.Time
}

// DeadLetters lists dead letters matching q (Endpoint, EventID, NHSNumber).
func (r *Replayer) DeadLetters(ctx context.Context, q Query) ([]DeadLetter, error) {
	var out []DeadLetter
	for seq := uint64(1); ; {
		raw, err := r.Dead.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(DeadSubjectPrefix+">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listing dead letters: %w", err)
		}
		seq = raw.Sequence + 1
		j, err := DecodeJob(raw.Header, raw.Data)
		if err != nil {
			continue
		}
		if (q.Endpoint != "" && q.Endpoint != j.Endpoint) || (q.EventID != "" && q.EventID != j.EventID) ||
			(q.NHSNumber != "" && q.NHSNumber != j.NHSNumber) {
			continue
		}
		dl := DeadLetter{Seq: raw.Sequence, JobID: j.ID, EventID: j.EventID, Endpoint: j.Endpoint, NHS: j.NHSNumber,
			Reason: raw.Header.Get(HeaderDeadReason), Error: raw.Header.Get("Ems-Dead-Error"), job: j}
		dl.Status, _ = strconv.Atoi(raw.Header.Get(HeaderDeadStatus))
		dl.Attempts, _ = strconv.Atoi(raw.Header.Get(HeaderDeadAttempts))
		dl.At, _ = time.Parse(time.RFC3339Nano, raw.Header.Get(HeaderDeadAt))
		if !q.Since.IsZero() && dl.At.Before(q.Since) {
			continue
		}
		out = append(out, dl)
		if q.Limit > 0 && len(out) >= q.Limit {
			return out, nil
		}
	}
}

// ErrNotReplayable: none of the job's subscriptions is still active and
// within its end.
var ErrNotReplayable = errors.New("no matched subscription is still active")

// ErrReplayedAlready: the dead letter is gone, replayed since it was listed.
var ErrReplayedAlready = errors.New("dead letter already replayed")

// Replay puts one dead letter back as a new generation of its job, keeping
// only the subscriptions still active and not past their end.
func (r *Replayer) Replay(ctx context.Context, dl DeadLetter) error {
	j := dl.job
	// A dead letter listed earlier may have been replayed since, by another
	// operator or a retried request: putting it back again would deliver
	// it twice.
	if _, err := r.Dead.GetMsg(ctx, dl.Seq); errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("replaying %s: %w", j.ID, ErrReplayedAlready)
	} else if err != nil {
		return fmt.Errorf("replaying %s: reading its dead letter: %w", j.ID, err)
	}
	now := r.Now()
	var keep []MatchInfo
	for _, m := range j.Matches {
		sub, err := r.Subscriptions.Get(m.Subscription)
		if err != nil {
			if errors.Is(err, subscription.ErrNotFound) {
				continue
			}
			return fmt.Errorf("checking subscription %s: %w", m.Subscription, err)
		}
		if sub.Status == subscription.StatusActive && !sub.Ended(now) {
			keep = append(keep, m)
		}
	}
	if len(keep) == 0 {
		return fmt.Errorf("replaying %s: %w", j.ID, ErrNotReplayable)
	}
	j.Matches = keep
	gen := j.Generation + 1
	if rec, err := r.Log.Get(j.ID); err == nil && rec.Generation >= gen {
		gen = rec.Generation + 1
	}
	j.Generation = gen
	if _, err := r.JS.PublishMsg(ctx, j.Msg()); err != nil {
		return fmt.Errorf("replaying %s: %w", j.ID, err)
	}
	// A replay racing this one past the check above removed it first; the
	// job is back on the deliveries stream either way.
	if err := r.Dead.DeleteMsg(ctx, dl.Seq); err != nil && !mesh.DeletedAlready(err) {
		return fmt.Errorf("replayed %s but could not remove its dead letter: %w", j.ID, err)
	}
	return nil
}
