package e2b

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"time"
)

// proxy passes a request for a sandbox's port to the guest's
// 127.0.0.1:port through its agent, so a sandbox without a network is
// reached too. The guest's answer is relayed as bytes, never parsed for
// anything but HTTP framing.
func (s *Service) proxy(w http.ResponseWriter, r *http.Request, id string, port int) {
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = target
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			for _, h := range []string{"E2b-Sandbox-Id", "E2b-Sandbox-Port", "E2b-Traffic-Access-Token", "X-Access-Token"} {
				pr.Out.Header.Del(h)
			}
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				g, err := s.o.VMs.Guest(ctx, id)
				if err != nil {
					return nil, err
				}
				return g.Dial(ctx, target)
			},
			ResponseHeaderTimeout:  5 * time.Minute,
			MaxResponseHeaderBytes: 1 << 20,
			DisableKeepAlives:      true,
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(w, http.StatusBadGateway, "sandbox %s port %d: %s", id, port, fmt.Sprint(err))
		},
	}
	rp.ServeHTTP(w, r)
}
