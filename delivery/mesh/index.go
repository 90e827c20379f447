package mesh

import (
	"slices"
	"sort"
	"sync"
	"time"
)

// index is this node's in-memory view of the unacknowledged inbox messages:
// per mailbox, the messages in stream-sequence order, and by (mailbox, id).
// It holds no bodies or headers, only what listing and filtering need, so an
// entry costs about a hundred bytes.
//
// It is fed from JetStream (feed.go): the inbox stream adds entries, the
// acknowledgements stream removes them. It is pure data, no I/O: the Store
// does the JetStream requests and tells the index their outcome.
type index struct {
	mu    sync.RWMutex
	boxes map[string]*box
	byKey map[indexKey]*entry
	// applied is the last inbox stream sequence added.
	applied uint64
	// holds are inbox sequences, ascending, that may still be stored
	// without being acknowledged although the index has no live entry for
	// them (a message the feed skipped, or one a read did not find):
	// floor stays at or below the first, so the deleter never purges them.
	// Past maxHolds, floor stays at 1 until the index is rebuilt.
	holds     []uint64
	holdsFull bool
	// workflows interns workflow ids: there are a handful, shared by all
	// entries.
	workflows map[string]string
}

type indexKey struct{ mailbox, id string }

type entry struct {
	id       string
	box      *box
	seq      uint64
	stored   int64 // unix nanoseconds
	workflow string
	// checked: the acknowledgements stream was read once since the entry
	// was added and had no acknowledgement of it. Until then the message
	// may have been acknowledged before this node started watching the
	// acknowledgements (or be a fan-out re-run re-storing an acknowledged
	// id), so it is not listed unchecked.
	checked bool
	dead    bool
	// claimed: an Ack on this node has begun; a concurrent one is not
	// the first.
	claimed bool
}

type box struct {
	name string
	// entries are in stream-sequence order (the feed appends in that
	// order). Removal marks an entry dead; dead entries are dropped from
	// the front at once and compacted away when they outnumber the live.
	entries []*entry
	head    int // entries[:head] are dead
	dead    int // dead entries in entries[head:]
}

// maxInterned bounds the workflow intern table (workflow ids come from the
// event catalogue, so a handful are expected).
const maxInterned = 1024

func newIndex() *index {
	return &index{boxes: map[string]*box{}, byKey: map[indexKey]*entry{}, workflows: map[string]string{}}
}

func (x *index) live(b *box) int { return len(b.entries) - b.head - b.dead }

// add records a message stored at seq. Sequences arrive in increasing
// order; a second store of an id (MaxMsgsPerSubject 1: the stream dropped
// the older one) replaces the older entry.
func (x *index) add(mailbox, id string, seq uint64, stored time.Time, workflow string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if seq <= x.applied {
		return // already seen (a feed restarting from an earlier point)
	}
	x.applied = seq
	k := indexKey{mailbox, id}
	if old, ok := x.byKey[k]; ok {
		x.kill(old)
	}
	b, ok := x.boxes[mailbox]
	if !ok {
		b = &box{name: mailbox}
		x.boxes[mailbox] = b
	}
	if w, ok := x.workflows[workflow]; ok {
		workflow = w
	} else if len(x.workflows) < maxInterned {
		x.workflows[workflow] = workflow
	}
	e := &entry{id: id, box: b, seq: seq, stored: stored.UnixNano(), workflow: workflow}
	b.entries = append(b.entries, e)
	x.byKey[indexKey{b.name, id}] = e
}

// acked applies an acknowledgement of (mailbox, id) of the message stored at
// ackedSeq (0: not known). A newer store of the id (a fan-out re-run after
// the acknowledgement) is left for the check, which finishes its delete.
func (x *index) acked(mailbox, id string, ackedSeq uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e, ok := x.byKey[indexKey{mailbox, id}]
	if !ok {
		return
	}
	if ackedSeq != 0 && e.seq > ackedSeq {
		e.checked = false
		return
	}
	x.kill(e)
}

// remove drops e if it is still the entry for its id. The caller knows
// e's message is acknowledged (or gone from the stream).
func (x *index) remove(e *entry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !e.dead {
		x.kill(e)
	}
}

// claim marks e as being acknowledged here and says whether it was the
// first to: not when another Ack here, or the acknowledgement feed (an Ack
// on another node), came first.
func (x *index) claim(e *entry) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if e.dead || e.claimed {
		return false
	}
	e.claimed = true
	return true
}

// unclaim undoes claim: the Ack failed.
func (x *index) unclaim(e *entry) {
	x.mu.Lock()
	e.claimed = false
	x.mu.Unlock()
}

// forget drops e without knowing that its message is acknowledged: a read
// did not find it, which in a cluster may be a replica that has not stored
// it yet. It holds the floor at e's sequence.
func (x *index) forget(e *entry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.holdAt(e.seq)
	if !e.dead {
		x.kill(e)
	}
}

// markChecked records that e is not acknowledged.
func (x *index) markChecked(e *entry) {
	x.mu.Lock()
	e.checked = true
	x.mu.Unlock()
}

// uncheck has e checked again before it is next listed.
func (x *index) uncheck(e *entry) {
	x.mu.Lock()
	e.checked = false
	x.mu.Unlock()
}

// kill removes e; x.mu is held.
func (x *index) kill(e *entry) {
	if e.dead {
		return
	}
	e.dead = true
	b := e.box
	delete(x.byKey, indexKey{b.name, e.id})
	b.dead++
	for b.head < len(b.entries) && b.entries[b.head].dead {
		b.entries[b.head] = nil
		b.head++
		b.dead--
	}
	switch {
	case b.head == len(b.entries):
		delete(x.boxes, b.name) // empty: a new message makes a new box
		b.entries, b.head, b.dead = nil, 0, 0
	case b.dead > 16 && b.dead > x.live(b), b.head > 64 && b.head > len(b.entries)/2:
		kept := make([]*entry, 0, x.live(b))
		for _, e := range b.entries[b.head:] {
			if !e.dead {
				kept = append(kept, e)
			}
		}
		b.entries, b.head, b.dead = kept, 0, 0
	}
}

// maxHolds bounds the holds: they are rare (an operator's message or purge).
const maxHolds = 1024

// holdAt keeps the floor at or below seq; x.mu is held.
func (x *index) holdAt(seq uint64) {
	i, found := slices.BinarySearch(x.holds, seq)
	switch {
	case found:
	case len(x.holds) >= maxHolds:
		x.holdsFull = true
	default:
		x.holds = slices.Insert(x.holds, i, seq)
	}
}

// floor is the inbox sequence below which every message the stream may
// still hold is acknowledged: the first live entry of any mailbox, the
// first sequence not yet indexed, or the first hold, whichever is lowest.
// Purging the stream below it removes only acknowledged messages.
func (x *index) floor() uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.holdsFull {
		return 1
	}
	f := x.applied + 1
	if len(x.holds) > 0 {
		f = min(f, x.holds[0])
	}
	for _, b := range x.boxes {
		if b.head < len(b.entries) {
			f = min(f, b.entries[b.head].seq) // entries[head] is live: kill drops dead ones from the front
		}
	}
	return f
}

// firstHold returns the lowest hold (0: none).
func (x *index) firstHold() uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if len(x.holds) == 0 {
		return 0
	}
	return x.holds[0]
}

// release drops the hold at seq: the message there is gone.
func (x *index) release(seq uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if i, found := slices.BinarySearch(x.holds, seq); found {
		x.holds = slices.Delete(x.holds, i, i+1)
	}
}

// lookup returns the live entry for (mailbox, id) and whether it was
// checked.
func (x *index) lookup(mailbox, id string) (*entry, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e := x.byKey[indexKey{mailbox, id}]
	return e, e != nil && e.checked
}

// count is the number of messages of a mailbox, checked or not.
func (x *index) count(mailbox string) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if b, ok := x.boxes[mailbox]; ok {
		return x.live(b)
	}
	return 0
}

// page selects up to limit messages of a mailbox after the message with id
// after, as List does. When one of the limit+1 first candidates is not yet
// checked, page returns those instead: the caller checks them and asks
// again.
func (x *index) page(mailbox, after string, limit int, keep Filter) (msgs []*Message, more bool, unchecked []*entry) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	b, ok := x.boxes[mailbox]
	if !ok {
		return nil, false, nil
	}
	es := b.entries[b.head:]
	afterID := ""
	if after != "" {
		if e, ok := x.byKey[indexKey{mailbox, after}]; ok {
			es = es[sort.Search(len(es), func(i int) bool { return es[i].seq > e.seq }):]
		} else {
			// continue_from names a message acknowledged meanwhile: the
			// client still wants what followed it, and ids sort in time
			// order.
			afterID = after
		}
	}
	var probe Message // what the filter sees: no header, no body
	candidates := 0
	for _, e := range es {
		if e.dead || (afterID != "" && e.id <= afterID) {
			continue
		}
		if keep != nil {
			probe = Message{ID: e.id, Mailbox: b.name, Seq: e.seq, Stored: time.Unix(0, e.stored), Workflow: e.workflow}
			if !keep(&probe) {
				continue
			}
		}
		candidates++
		if !e.checked {
			unchecked = append(unchecked, e)
		} else if len(unchecked) == 0 && candidates <= limit {
			msgs = append(msgs, e.message(b.name))
		}
		if candidates > limit {
			break
		}
	}
	if len(unchecked) > 0 {
		return nil, false, unchecked
	}
	return msgs, candidates > limit, nil
}

func (e *entry) message(mailbox string) *Message {
	return &Message{ID: e.id, Mailbox: mailbox, Seq: e.seq, Stored: time.Unix(0, e.stored), Workflow: e.workflow}
}

// reset forgets everything (the inbox stream was replaced).
func (x *index) reset() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.boxes, x.byKey, x.applied = map[string]*box{}, map[indexKey]*entry{}, 0
	x.holds, x.holdsFull = nil, false
}

// skip records that the inbox stream's seq is not a message of a mailbox.
func (x *index) skip(seq uint64) {
	x.mu.Lock()
	if seq > x.applied {
		x.holdAt(seq) // not a mailbox message: not ours to purge
	}
	x.applied = max(x.applied, seq)
	x.mu.Unlock()
}

// size is the number of messages indexed.
func (x *index) size() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byKey)
}

// appliedSeq is the last inbox stream sequence added.
func (x *index) appliedSeq() uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.applied
}
