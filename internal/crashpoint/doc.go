// Package crashpoint kills the daemon at a named step of its work, for
// the reliability campaign (`make reliability`): each step is a place
// where a daemon killed mid-operation must leave things that a restart
// finishes or undoes. Production builds compile At to nothing; only a
// build with the `crashpoints` tag (bin/crash, made by `make
// build-crash`) reads the environment:
//
//	BANGER_CRASH_AT=STEP      SIGKILL the daemon when it reaches STEP
//	BANGER_CRASH_TRACE=FILE   append every step reached to FILE
//
// A step is "VERB:WHAT", such as "vm.create:booting" (an operation's
// phase, told through the operations registry) or "vm.boot:vmm started"
// (a point named in the code).
package crashpoint

// Step names a crash point: verb and what it is about to do or has done.
func Step(verb, what string) string { return verb + ":" + what }
