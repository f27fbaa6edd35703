package replyhook

import (
	"context"
	"slices"
	"testing"
)

func TestAfterReplyRunsOnceInOrder(t *testing.T) {
	ctx, replied := With(context.Background())
	if !Enabled(ctx) {
		t.Fatal("Enabled = false on a hooked context")
	}
	var got []int
	for i := range 3 {
		if !AfterReply(ctx, func() { got = append(got, i) }) {
			t.Fatalf("AfterReply %d refused", i)
		}
	}
	if len(got) != 0 {
		t.Fatalf("ran before the reply: %v", got)
	}
	replied()
	if want := []int{0, 1, 2}; !slices.Equal(got, want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	replied()
	if len(got) != 3 {
		t.Fatalf("ran again: %v", got)
	}
	// The reply is gone: a late registration must not be accepted (its
	// buffer would never be released, or be released while still in use).
	if Enabled(ctx) || AfterReply(ctx, func() { t.Error("late function ran") }) {
		t.Fatal("registration accepted after the reply")
	}
	replied()
}

func TestNoServerHook(t *testing.T) {
	ctx := context.Background()
	if Enabled(ctx) || AfterReply(ctx, func() { t.Error("ran without a hook") }) {
		t.Fatal("a plain context accepted a hook")
	}
}
