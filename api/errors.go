package api

import (
	"context"
	"errors"
)

// Code is a wire error code. Clients branch on codes (through errors.Is on
// the sentinels below), never on messages.
type Code string

const (
	CodeVersionMismatch Code = "version_mismatch"
	CodeUnknownMethod   Code = "unknown_method"
	CodeInvalidRequest  Code = "invalid_request"
	CodeNotFound        Code = "not_found"
	CodeNotRunning      Code = "not_running"
	CodeAlreadyExists   Code = "already_exists"
	CodeInUse           Code = "in_use"
	CodeInvalidArgument Code = "invalid_argument"
	CodeCanceled        Code = "canceled"
	CodeUnresponsive    Code = "unresponsive" // a running VM's agent did not answer in time
	CodeOperationFailed Code = "operation_failed"
	CodeGuestRefused    Code = "guest_refused"  // a VM sent what the host does not accept from a guest
	CodeLimitExceeded   Code = "limit_exceeded" // over a configured cap (the message names the key)
	// CodePermissionDenied: the caller named something on the host it
	// may not use itself (a file it cannot read), or that the daemon
	// cannot prove it may.
	CodePermissionDenied Code = "permission_denied"
	// CodeNoSpace: a file system the request writes to is full; the
	// message names it.
	CodeNoSpace Code = "no_space"
)

// Sentinel errors. Services wrap them with context (fmt.Errorf("vm %q: %w",
// name, api.ErrNotFound)); the daemon maps them to codes with CodeOf and the
// client maps codes back with (*Error).Unwrap, so errors.Is works end to end.
var (
	ErrVersionMismatch  = errors.New("version mismatch")
	ErrUnknownMethod    = errors.New("unknown method")
	ErrInvalidRequest   = errors.New("invalid request")
	ErrNotFound         = errors.New("not found")
	ErrNotRunning       = errors.New("not running")
	ErrAlreadyExists    = errors.New("already exists")
	ErrInUse            = errors.New("in use")
	ErrInvalidArgument  = errors.New("invalid argument")
	ErrCanceled         = errors.New("canceled")
	ErrUnresponsive     = errors.New("unresponsive")
	ErrOperationFailed  = errors.New("operation failed")
	ErrGuestRefused     = errors.New("refused from the guest")
	ErrLimitExceeded    = errors.New("limit exceeded")
	ErrPermissionDenied = errors.New("permission denied")
	ErrNoSpace          = errors.New("no space left")
)

// codeTable is the one place sentinels and codes meet. Order matters only
// for errors that wrap several sentinels: the first match wins.
func codeTable() []struct {
	err  error
	code Code
} {
	return []struct {
		err  error
		code Code
	}{
		{ErrVersionMismatch, CodeVersionMismatch},
		{ErrUnknownMethod, CodeUnknownMethod},
		{ErrInvalidRequest, CodeInvalidRequest},
		{ErrNotFound, CodeNotFound},
		{ErrNotRunning, CodeNotRunning},
		{ErrAlreadyExists, CodeAlreadyExists},
		{ErrInUse, CodeInUse},
		{ErrInvalidArgument, CodeInvalidArgument},
		{ErrCanceled, CodeCanceled},
		{ErrUnresponsive, CodeUnresponsive},
		{ErrOperationFailed, CodeOperationFailed},
		{ErrGuestRefused, CodeGuestRefused},
		{ErrLimitExceeded, CodeLimitExceeded},
		{ErrPermissionDenied, CodePermissionDenied},
		{ErrNoSpace, CodeNoSpace},
	}
}

// CodeOf returns the wire code for err: the code of the first sentinel it
// wraps, CodeCanceled for a canceled context, else CodeOperationFailed.
func CodeOf(err error) Code {
	var wire *Error
	if errors.As(err, &wire) {
		return wire.Code
	}
	for _, row := range codeTable() {
		if errors.Is(err, row.err) {
			return row.code
		}
	}
	if errors.Is(err, context.Canceled) {
		return CodeCanceled
	}
	return CodeOperationFailed
}

// SentinelFor returns the sentinel error for code, or ErrOperationFailed for
// a code this version does not know.
func SentinelFor(code Code) error {
	for _, row := range codeTable() {
		if row.code == code {
			return row.err
		}
	}
	return ErrOperationFailed
}

// Error is an error as it travels on the wire.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Unwrap makes errors.Is(err, api.ErrNotFound) true for a decoded
// not_found error.
func (e *Error) Unwrap() error { return SentinelFor(e.Code) }

// ToWire converts any error into its wire form.
func ToWire(err error) *Error {
	var wire *Error
	if errors.As(err, &wire) {
		return &Error{Code: wire.Code, Message: err.Error()}
	}
	return &Error{Code: CodeOf(err), Message: err.Error()}
}
