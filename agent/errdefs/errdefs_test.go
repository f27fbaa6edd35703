package errdefs

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
)

func TestErrorfKeepsMessageAndKindAndCause(t *testing.T) {
	err := Errorf(ErrNotFound, "container %q: %w", "c1", fs.ErrNotExist)
	if err.Error() != `container "c1": file does not exist` {
		t.Errorf("message %q", err)
	}
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%v: kind or cause lost", err)
	}
	if errors.Is(err, ErrInvalidArgument) {
		t.Error("wrong kind matches")
	}
	wrapped := Mark(ErrInvalidArgument, New(ErrNotFound, "x"))
	if !errors.Is(wrapped, ErrInvalidArgument) || !errors.Is(wrapped, ErrNotFound) || wrapped.Error() != "x" {
		t.Errorf("Mark: %v", wrapped)
	}
	if Mark(ErrNotFound, nil) != nil {
		t.Error("Mark(nil) is not nil")
	}
}

func TestKindOfIsTheOutermost(t *testing.T) {
	for _, c := range []struct {
		err  error
		want error
	}{
		{nil, nil},
		{errors.New("plain"), nil},
		{ErrNotFound, ErrNotFound},
		{fmt.Errorf("process %q: %w", "p", ErrNotFound), ErrNotFound},
		{Errorf(ErrInvalidArgument, "bad path: %w", Errorf(ErrNotFound, "missing")), ErrInvalidArgument},
		{fmt.Errorf("outer: %w", Mark(ErrFailedPrecondition, fmt.Errorf("inner: %w", ErrAlreadyExists))), ErrFailedPrecondition},
		{errors.Join(errors.New("x"), fmt.Errorf("y: %w", ErrUnavailable)), ErrUnavailable},
	} {
		if got := KindOf(c.err); got != c.want {
			t.Errorf("KindOf(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
