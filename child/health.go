package child

import (
	"encoding/json"
	"net/http"
	"os"
)

// Health returns a handler for a health endpoint: 200 with
// {"status":"ok","pid":P,"generation":G} while serving, 503 with
// "status":"stopping" in the lame duck (Config.LameDuck) and
// "status":"draining" once the drain has begun, so that load balancers
// and readiness checks stop sending traffic here.
func (s *Server) Health() http.Handler {
	pid, gen := os.Getpid(), Generation()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := struct {
			Status     string `json:"status"`
			PID        int    `json:"pid"`
			Generation int    `json:"generation"`
		}{"ok", pid, gen}
		code := http.StatusOK
		switch {
		case s.Draining():
			body.Status, code = "draining", http.StatusServiceUnavailable
		case s.lame.Load():
			body.Status, code = "stopping", http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(body)
	})
}
