// Package api holds the public shape of banger's daemon API: method names,
// request and result types, error codes and the sentinel errors they map to.
// It depends on the standard library only, so any client can import it.
package api
