package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseList(t *testing.T) {
	out := "FuzzA\nFuzzB\nok  \tgithub.com/x/y/internal/a\t0.01s\n?   \tgithub.com/x/y/cmd\t[no test files]\nFuzzC\nok  \tgithub.com/x/y/internal/c\t0.02s\n"
	got, err := parseList(out, "github.com/x/y")
	if err != nil {
		t.Fatal(err)
	}
	want := []target{{"./internal/a", "FuzzA"}, {"./internal/a", "FuzzB"}, {"./internal/c", "FuzzC"}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if _, err := parseList("FuzzA\n", "github.com/x/y"); err == nil {
		t.Fatal("a name without its package line was taken")
	}
}

func TestCompare(t *testing.T) {
	targets := []target{{"./a", "FuzzA"}, {"./b", "FuzzB"}}
	for _, tc := range []struct {
		name  string
		given []string
		want  string // in the error; "" for none
	}{
		{"all, with counts", []string{"./a:FuzzA:100", "./b:FuzzB:5"}, ""},
		{"one missing", []string{"./a:FuzzA:100"}, "not in test/fuzzcampaign/targets.txt: ./b:FuzzB"},
		{"one unknown", []string{"./a:FuzzA:1", "./b:FuzzB:1", "./c:FuzzC:1"}, "does not have: ./c:FuzzC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := compare(targets, tc.given)
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParseRun(t *testing.T) {
	out := []byte(`fuzz: elapsed: 0s, gathering baseline coverage: 0/12 completed
fuzz: elapsed: 3s, execs: 1000 (333/sec), new interesting: 1 (total: 13)
fuzz: elapsed: 6s, execs: 2500 (500/sec), new interesting: 4 (total: 16)
--- FAIL: FuzzX (6.10s)
    --- FAIL: FuzzX (0.00s)
        x_test.go:10: boom

    Failing input written to testdata/fuzz/FuzzX/abc123
    To re-run:
    go test -run=FuzzX/abc123
FAIL
exit status 1
`)
	var r result
	r.parse(out)
	if r.execs != 2500 || r.newFound != 4 || r.corpus != 16 || r.elapsed != 6*time.Second {
		t.Fatalf("parsed %+v", r)
	}
	r.failing = failingInputs(out)
	if !slices.Equal(r.failing, []string{"testdata/fuzz/FuzzX/abc123"}) || !r.failed() {
		t.Fatalf("failing inputs %v, failed %v", r.failing, r.failed())
	}
	if got := lastLine(out); got != "go test -run=FuzzX/abc123" {
		t.Fatalf("last line %q", got)
	}
	clean := result{ended: "Go's end-of-budget race, corpus replayed clean"}
	if clean.failed() {
		t.Fatal("a replayed-clean race counted as a failure")
	}
}
