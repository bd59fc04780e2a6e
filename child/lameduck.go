package child

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"
)

// EnvLameDuck sets Config.LameDuck without a rebuild: a Go duration such
// as "15s", or "0" for none. It takes precedence over Config.LameDuck, so
// that a Kubernetes or Nomad manifest tunes the binary it runs.
const EnvLameDuck = "BATON_LAME_DUCK"

// lameDuckFrom resolves the lame duck: env, when set, over the value of
// Config. A value of env that is not a duration is an error, and the
// Config value stays.
func lameDuckFrom(cfg time.Duration, env string) (time.Duration, error) {
	if env == "" {
		return cfg, nil
	}
	d, err := time.ParseDuration(env)
	if err != nil || d < 0 {
		return cfg, fmt.Errorf("child: %s=%q is not a duration such as \"15s\"", EnvLameDuck, env)
	}
	return d, nil
}

// lameDuck runs between the stop signal and the drain of a server that
// runs without baton: for Config.LameDuck it keeps accepting and serving,
// while Health answers 503 and every response carries "Connection:
// close", so that the load balancers still sending here (the endpoint
// removal of Kubernetes or Nomad takes seconds to reach them) are served
// until they have seen the health check fail. A second signal, the end
// of ctx, a serve error or a failed task ends it early; the error is the
// cause of a failure, nil otherwise.
func (s *Server) lameDuck(ctx context.Context, sig os.Signal, sigs <-chan os.Signal, serveErr <-chan error) error {
	d := s.cfg.LameDuck
	if d <= 0 {
		return nil
	}
	s.lame.Store(true)
	s.notify("STATUS=lame duck: failing health checks, still serving")
	s.log.Info("lame duck: health answers 503 and responses close their connections; still accepting", "signal", sig.String(), "for", d.String())
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case sig := <-sigs:
		s.log.Info("lame duck cut short", "signal", sig.String())
		return nil
	case <-ctx.Done():
		return nil
	case err := <-serveErr:
		s.log.Error("serving failed, draining", "error", err)
		return fmt.Errorf("child: serve: %w", err)
	case err := <-s.tasks.failed:
		s.log.Error("background task failed, draining", "error", err)
		return err
	}
}

// closing reports whether the response to r asks its client to close the
// connection: always in the lame duck, and during the drain unless the
// connection moves to the next generation once idle (closesAfter).
func (s *Server) closing(r *http.Request) bool {
	return s.lame.Load() || (s.draining.Load() && s.closesAfter(r))
}
