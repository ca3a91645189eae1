package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	regfsfs "github.com/regfs/regfs/fs"
)

// metricsServer serves /metrics on --metrics-addr.
type metricsServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// listenMetrics binds addr before the mount is made, so that a bad or
// taken address stops regfs before it mounts anything.
func listenMetrics(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %v", err)
	}
	return ln, nil
}

// serveMetrics serves fsys's metrics, with the Go runtime's and the
// process's, at /metrics on ln.
func serveMetrics(log *slog.Logger, ln net.Listener, fsys *regfsfs.FS) *metricsServer {
	reg := prometheus.NewRegistry()
	reg.MustRegister(fsys.Collector(), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	m := &metricsServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("serving metrics failed", "error", err)
		}
	}()
	log.Info("serving metrics", "addr", "http://"+ln.Addr().String()+"/metrics")
	return m
}

// stop ends the server, giving a scrape in progress a moment.
func (m *metricsServer) stop() {
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = m.srv.Shutdown(ctx)
	<-m.done
}
