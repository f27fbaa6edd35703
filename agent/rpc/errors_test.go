package rpc

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wren-vm/wren/agent/errdefs"
)

func TestToStatusTable(t *testing.T) {
	for kind, code := range codeOf {
		err := toStatus(fmt.Errorf("ctx: %w", errdefs.Errorf(kind, "what went wrong")))
		if status.Code(err) != code {
			t.Errorf("%v: code %v, want %v", kind, status.Code(err), code)
		}
		if st, _ := status.FromError(err); st.Message() != "ctx: what went wrong" {
			t.Errorf("%v: message %q", kind, st.Message())
		}
	}
	for _, c := range []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{errors.New("disk on fire"), codes.Internal},
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("wait: %w", context.Canceled), codes.Canceled},
		{status.Error(codes.OutOfRange, "library said so"), codes.OutOfRange},
		// A kind marked on a context error wins over the context.
		{errdefs.Mark(errdefs.ErrUnavailable, context.DeadlineExceeded), codes.Unavailable},
	} {
		if got := status.Code(toStatus(c.err)); got != c.want {
			t.Errorf("toStatus(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
