package proto

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	frames := []Frame{
		{Kind: KindRequest, Stream: 1, Payload: []byte(`{"method":"ping"}`)},
		{Kind: KindData, Stream: 1, Payload: append([]byte{Stdout}, bytes.Repeat([]byte("x"), 256<<10)...)},
		{Kind: KindClose, Stream: 1, Payload: []byte{Stdin}},
		{Kind: KindResponse, Stream: 7, Payload: []byte(`{"result":{}}`)},
		{Kind: KindWindow, Stream: 3, Payload: WindowPayload(40, 120)},
		{Kind: KindHello, Payload: []byte{}},
	}
	var b []byte
	for _, f := range frames {
		var err error
		if b, err = AppendFrame(b, f); err != nil {
			t.Fatal(err)
		}
	}
	r := bytes.NewReader(b)
	for _, want := range frames {
		got, err := ReadFrame(r)
		if err != nil || got.Kind != want.Kind || got.Stream != want.Stream || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("ReadFrame = %v %d %d, %v", got.Kind, got.Stream, len(got.Payload), err)
		}
	}
	if rows, cols := WindowSize(frames[4].Payload); rows != 40 || cols != 120 {
		t.Fatalf("WindowSize = %d x %d", rows, cols)
	}
	if _, err := ReadFrame(r); err != io.EOF {
		t.Fatalf("at the end: %v", err)
	}
	if _, err := AppendFrame(nil, Frame{Kind: KindData, Payload: make([]byte, MaxFrame)}); !errors.Is(err, ErrFrame) {
		t.Fatalf("oversized frame encoded: %v", err)
	}
}

func TestBadFrames(t *testing.T) {
	for name, b := range map[string][]byte{
		"huge length":   {0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0},
		"short length":  {0, 0, 0, 2, 1, 0},
		"unknown kind":  {0, 0, 0, 5, 9, 0, 0, 0, 1},
		"data, no fd":   {0, 0, 0, 5, KindData, 0, 0, 0, 1},
		"bad fd":        {0, 0, 0, 6, KindData, 0, 0, 0, 1, 7},
		"close + bytes": {0, 0, 0, 7, KindClose, 0, 0, 0, 1, 0, 'x'},
		"short window":  {0, 0, 0, 7, KindWindow, 0, 0, 0, 1, 0, 24},
		"hello + bytes": {0, 0, 0, 6, KindHello, 0, 0, 0, 0, 1},
		"truncated":     {0, 0, 0, 9, KindRequest, 0, 0, 0, 1, '{'},
	} {
		if _, err := ReadFrame(bytes.NewReader(b)); err == nil || err == io.EOF {
			t.Errorf("%s: ReadFrame = %v", name, err)
		}
	}
}

func FuzzReadFrame(f *testing.F) {
	seed, _ := AppendFrame(nil, Frame{Kind: KindRequest, Stream: 1, Payload: []byte(`{"method":"exec"}`)})
	f.Add(seed)
	f.Add([]byte{0, 0, 0, 6, KindData, 0, 0, 0, 1, 1})
	f.Add([]byte{0, 0, 0, 9, KindWindow, 0, 0, 0, 1, 0, 24, 0, 80})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			fr, err := ReadFrame(r)
			if err != nil {
				return
			}
			again, err := AppendFrame(nil, fr)
			if err != nil {
				t.Fatalf("a frame that decoded does not encode: %v", err)
			}
			back, err := ReadFrame(bytes.NewReader(again))
			if err != nil || back.Kind != fr.Kind || back.Stream != fr.Stream || !bytes.Equal(back.Payload, fr.Payload) {
				t.Fatalf("round trip changed the frame")
			}
		}
	})
}

func TestProtocol(t *testing.T) {
	for _, c := range []struct {
		frame Frame
		want  uint16
	}{
		{Hello(), Protocol},
		{Frame{Kind: KindHello}, 1}, // banger 0.1's agent
		{Frame{Kind: KindHello, Payload: []byte{0, 7}}, 7},
	} {
		b, err := AppendFrame(nil, c.frame)
		if err != nil {
			t.Fatal(err)
		}
		f, err := ReadFrame(bytes.NewReader(b))
		if err != nil || HelloProtocol(f) != c.want {
			t.Errorf("%v: %d, %v", c.frame.Payload, HelloProtocol(f), err)
		}
	}
	if PingProtocol(PingResult{}) != 1 || PingProtocol(PingResult{Protocol: 2}) != 2 {
		t.Error("ping protocol")
	}
	for _, c := range []struct {
		v, min uint16
		ok     bool
	}{{0, 1, false}, {1, 1, true}, {2, 1, true}, {1, 2, false}, {65535, 2, true}} {
		err := CheckProtocol(c.v, c.min)
		if (err == nil) != c.ok || (err != nil && (!errors.Is(err, ErrOldAgent) || !strings.Contains(err.Error(), "needs"))) {
			t.Errorf("%d against %d: %v", c.v, c.min, err)
		}
	}
}
