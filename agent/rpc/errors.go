package rpc

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wren-vm/wren/agent/errdefs"
)

// codeOf is the one table from the domain packages' kinds of failure
// (agent/errdefs) to ttrpc status codes.
var codeOf = map[error]codes.Code{
	errdefs.ErrInvalidArgument:    codes.InvalidArgument,
	errdefs.ErrNotFound:           codes.NotFound,
	errdefs.ErrAlreadyExists:      codes.AlreadyExists,
	errdefs.ErrFailedPrecondition: codes.FailedPrecondition,
	errdefs.ErrUnimplemented:      codes.Unimplemented,
	errdefs.ErrPermissionDenied:   codes.PermissionDenied,
	errdefs.ErrResourceExhausted:  codes.ResourceExhausted,
	errdefs.ErrUnavailable:        codes.Unavailable,
	errdefs.ErrDeadlineExceeded:   codes.DeadlineExceeded,
	errdefs.ErrAborted:            codes.Aborted,
}

// toStatus turns a handler's error into the status the caller gets: the
// code of the outermost kind the error carries, else DeadlineExceeded or
// Canceled when the request's context ended, else Internal (a failure of
// the agent's own). The message is the error's. A status error (from a
// library speaking the protocol) keeps its code.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if k := errdefs.KindOf(err); k != nil {
		return status.Error(codeOf[k], err.Error())
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return st.Err()
	}
	return status.Error(codes.Internal, err.Error())
}
