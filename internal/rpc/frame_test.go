package rpc

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/bangerdev/banger/api"
)

func TestReadFrame(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		max     int
		want    []string
		wantErr error
	}{
		{name: "one", in: "{\"a\":1}\n", want: []string{`{"a":1}`}, wantErr: io.EOF},
		{name: "several", in: "a\nb\nc\n", want: []string{"a", "b", "c"}, wantErr: io.EOF},
		{name: "blank lines skipped", in: "\n\n  \na\n\r\n", want: []string{"a"}, wantErr: io.EOF},
		{name: "last frame without newline", in: "a\nb", want: []string{"a", "b"}, wantErr: io.EOF},
		{name: "crlf trimmed", in: "a\r\n", want: []string{"a"}, wantErr: io.EOF},
		{name: "empty", in: "", wantErr: io.EOF},
		{name: "too large", in: strings.Repeat("x", 100) + "\n", max: 50, wantErr: ErrFrameTooLarge},
		{name: "too large after a good frame", in: "ok\n" + strings.Repeat("x", 100), max: 50, want: []string{"ok"}, wantErr: ErrFrameTooLarge},
		{name: "exactly max", in: strings.Repeat("x", 49) + "\n", max: 50, want: []string{strings.Repeat("x", 49)}, wantErr: io.EOF},
		{name: "larger than the buffer", in: strings.Repeat("y", 200<<10) + "\n", want: []string{strings.Repeat("y", 200<<10)}, wantErr: io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			max := tt.max
			if max == 0 {
				max = MaxFrameSize
			}
			r := NewReaderSize(strings.NewReader(tt.in), max)
			var got []string
			var err error
			for {
				var f []byte
				f, err = r.ReadFrame()
				if err != nil {
					break
				}
				got = append(got, string(f))
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("final error = %v, want %v", err, tt.wantErr)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Fatalf("frames = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		ok     bool
		id     uint64
		method string
		params string
		errHas string
	}{
		{name: "full", in: `{"v":1,"id":3,"method":"ping","client":"x","params":{"a":1}}`, ok: true, id: 3, method: "ping", params: `{"a":1}`},
		{name: "no params", in: `{"v":1,"id":4,"method":"ping"}`, ok: true, id: 4, method: "ping"},
		{name: "null params", in: `{"v":1,"id":4,"method":"ping","params":null}`, ok: true, id: 4, method: "ping"},
		{name: "other version decodes", in: `{"v":99,"id":5,"method":"ping"}`, ok: true, id: 5, method: "ping"},
		{name: "unknown top-level fields ignored", in: `{"v":1,"id":6,"method":"ping","trace":"x"}`, ok: true, id: 6, method: "ping"},
		{name: "no version", in: `{"id":7,"method":"ping"}`, id: 7, errHas: `field "v"`},
		{name: "no method", in: `{"v":1,"id":8}`, id: 8, errHas: `field "method"`},
		{name: "empty method", in: `{"v":1,"id":8,"method":""}`, id: 8, errHas: `field "method"`},
		{name: "not json", in: `hello`, errHas: "not a JSON request object"},
		{name: "array", in: `[1,2]`, errHas: "not a JSON request object"},
		{name: "wrong type", in: `{"v":"1","id":9,"method":"ping"}`, id: 9, errHas: "not a JSON request object"},
		{name: "negative id", in: `{"v":1,"id":-1,"method":"ping"}`, errHas: "not a JSON request object"},
		{name: "binary", in: "\x00\xff\xfe", errHas: "not a JSON request object"},
		{name: "caller", in: `{"v":1,"id":10,"method":"ping","caller":"mcp:a"}`, ok: true, id: 10, method: "ping"},
		{name: "long caller", in: `{"v":1,"id":11,"method":"ping","caller":"` + strings.Repeat("x", 129) + `"}`, id: 11, errHas: "caller is longer than 128 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := DecodeRequest([]byte(tt.in))
			if req.ID != tt.id {
				t.Errorf("ID = %d, want %d", req.ID, tt.id)
			}
			if !tt.ok {
				if !errors.Is(err, api.ErrInvalidRequest) || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want invalid request containing %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.Method != tt.method || string(req.Params) != tt.params {
				t.Fatalf("req = %+v", req)
			}
		})
	}
}

func TestWriteFrameIsOneLine(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteFrame(map[string]string{"s": "a\nb<>&"}); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != "{\"s\":\"a\\nb<>&\"}\n" {
		t.Fatalf("frame = %q", got)
	}
}

// FuzzDecodeRequest feeds arbitrary bytes through the frame reader and the
// request decoder: neither may panic, every frame is bounded, and a decoded
// request always has a method and a version field.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"id":1,"method":"ping"}` + "\n",
		`{"v":1,"id":2,"method":"operations.get","params":{"id":"op-1"}}` + "\n",
		`{"v":2,"id":3,"method":"version","client":"0.2.0"}`,
		"\n\n{}\n[]\nnull\n\"x\"\n",
		`{"v":1,"id":18446744073709551615,"method":"\u0000"}`,
		"\x00\x01\x02\xff",
		`{"v":1,"method":"ping","params":` + strings.Repeat("[", 1000),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReaderSize(bytes.NewReader(data), 4096)
		for range 1000 {
			frame, err := r.ReadFrame()
			if err != nil {
				return
			}
			if len(frame) > 4096 {
				t.Fatalf("frame of %d bytes exceeds the bound", len(frame))
			}
			req, err := DecodeRequest(frame)
			if err != nil {
				if !errors.Is(err, api.ErrInvalidRequest) {
					t.Fatalf("decode error %v does not wrap ErrInvalidRequest", err)
				}
				continue
			}
			if req.Method == "" {
				t.Fatalf("decoded request without a method from %q", frame)
			}
		}
	})
}
