// Package errdefs names the kinds of failure the agent's domain packages
// report, so that they can say "not found" or "invalid argument" without
// knowing the wire protocol. A domain package wraps one of these kinds
// (Errorf does it without changing the message); agent/rpc, the protocol
// edge, maps each kind to a ttrpc status code in one table. An error that
// wraps none of them is the agent's own failure (Internal).
package errdefs

import (
	"errors"
	"fmt"
)

// The kinds, one per status code a caller can act on.
var (
	// ErrInvalidArgument: the request itself is malformed or not allowed.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: the request names something that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: the request would create something that exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrFailedPrecondition: the agent is not in a state that allows the
	// request (no sandbox yet, a container that stopped, ...).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrUnimplemented: this agent does not do what was asked.
	ErrUnimplemented = errors.New("unimplemented")
	// ErrPermissionDenied: the request is refused on principle.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrResourceExhausted: a limit was reached; the same request may pass
	// later.
	ErrResourceExhausted = errors.New("resource exhausted")
	// ErrUnavailable: something the request needs is not there yet.
	ErrUnavailable = errors.New("unavailable")
	// ErrDeadlineExceeded: a wait the request started ran out of time.
	ErrDeadlineExceeded = errors.New("deadline exceeded")
	// ErrAborted: the request was abandoned part-way, nothing was changed.
	ErrAborted = errors.New("aborted")
)

// kindError is an error of one kind whose message is the cause's alone.
type kindError struct {
	kind  error
	cause error
}

func (e *kindError) Error() string   { return e.cause.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.cause} }

// Errorf formats an error as fmt.Errorf does (%w included) and marks it as
// of the given kind; the kind does not appear in the message.
func Errorf(kind error, format string, a ...any) error {
	return &kindError{kind: kind, cause: fmt.Errorf(format, a...)}
}

// New is Errorf without formatting.
func New(kind error, msg string) error {
	return &kindError{kind: kind, cause: errors.New(msg)}
}

// Mark gives err the kind without changing its message; nil stays nil.
func Mark(kind, err error) error {
	if err == nil {
		return nil
	}
	return &kindError{kind: kind, cause: err}
}

var kinds = []error{
	ErrInvalidArgument, ErrNotFound, ErrAlreadyExists, ErrFailedPrecondition, ErrUnimplemented,
	ErrPermissionDenied, ErrResourceExhausted, ErrUnavailable, ErrDeadlineExceeded, ErrAborted,
}

// KindOf returns the outermost kind in err's chain (depth first, as
// errors.Is walks it), or nil when err carries none. Outermost matters: an
// error that a caller re-marks, say a missing file reported as an invalid
// path, is of the caller's kind.
func KindOf(err error) error {
	if err == nil {
		return nil
	}
	if k, ok := err.(*kindError); ok {
		return k.kind
	}
	for _, k := range kinds {
		if err == k {
			return k
		}
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return KindOf(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if k := KindOf(e); k != nil {
				return k
			}
		}
	}
	return nil
}
