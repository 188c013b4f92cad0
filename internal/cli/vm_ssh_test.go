package cli

import "testing"

func TestRemoteCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ls | wc -l"}, "ls | wc -l"},
		{[]string{"sh", "-c", "echo hi; exit 7"}, `sh -c 'echo hi; exit 7'`},
		{[]string{"echo", "it's", ""}, `echo 'it'\''s' ''`},
		{[]string{"/usr/bin/env", "A=b_c.d"}, `/usr/bin/env 'A=b_c.d'`},
	} {
		if got := remoteCommand(tc.args); got != tc.want {
			t.Errorf("remoteCommand(%q) = %s, want %s", tc.args, got, tc.want)
		}
	}
}
