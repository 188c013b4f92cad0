package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

func TestCodeOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Code
	}{
		{fmt.Errorf("vm %q: %w", "web", ErrNotFound), CodeNotFound},
		{fmt.Errorf("a: %w", fmt.Errorf("b: %w", ErrInUse)), CodeInUse},
		{ErrAlreadyExists, CodeAlreadyExists},
		{ErrInvalidArgument, CodeInvalidArgument},
		{ErrNotRunning, CodeNotRunning},
		{fmt.Errorf("vm web: agent: %w", ErrUnresponsive), CodeUnresponsive},
		{ErrVersionMismatch, CodeVersionMismatch},
		{ErrUnknownMethod, CodeUnknownMethod},
		{ErrInvalidRequest, CodeInvalidRequest},
		{fmt.Errorf("waiting: %w", context.Canceled), CodeCanceled},
		{errors.New("disk on fire"), CodeOperationFailed},
		{fmt.Errorf("pull: %w", ErrNoSpace), CodeNoSpace},
		{&Error{Code: CodeInUse, Message: "x"}, CodeInUse},
	} {
		if got := CodeOf(tc.err); got != tc.want {
			t.Errorf("CodeOf(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

// Every sentinel survives a trip over the wire: encoded by the daemon,
// decoded by the client, still matching errors.Is.
func TestWireRoundTrip(t *testing.T) {
	seen := map[Code]bool{}
	for _, row := range codeTable() {
		if seen[row.code] {
			t.Fatalf("code %s mapped twice", row.code)
		}
		seen[row.code] = true
		b, err := json.Marshal(ToWire(fmt.Errorf("doing it: %w", row.err)))
		if err != nil {
			t.Fatal(err)
		}
		var back *Error
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if back.Code != row.code || !errors.Is(back, row.err) || back.Error() != "doing it: "+row.err.Error() {
			t.Errorf("%s came back as %+v", row.code, back)
		}
	}
	if unknown := (&Error{Code: "from_the_future"}); !errors.Is(unknown, ErrOperationFailed) {
		t.Error("an unknown code should read as operation_failed")
	}
}
