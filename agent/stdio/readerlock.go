package stdio

import "context"

// readerLock lets one reader at a time use a stream. Unlike a sync.Mutex,
// waiting for it ends with the waiter's context: a reply spliced from the
// pipe (replysplice) keeps the stream locked until it is on the wire, and
// a client that stops reading its connection can make that take as long
// as it likes, so another call reading the same stream must still be able
// to give up.
type readerLock chan struct{}

func newReaderLock() readerLock { return make(readerLock, 1) }

// lock takes the lock, or returns ctx's error if ctx ends first.
func (l readerLock) lock(ctx context.Context) error {
	select {
	case l <- struct{}{}:
		return nil
	default:
	}
	select {
	case l <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l readerLock) unlock() { <-l }
