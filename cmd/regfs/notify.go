package main

import (
	"log/slog"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifySystemd sends state to systemd's NOTIFY_SOCKET when there is one
// (a Type=notify unit): READY=1 once the mount answers, STOPPING=1 when
// the unmount starts. Without the socket it does nothing.
func notifySystemd(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("telling systemd failed", "state", state, "error", err)
	}
}
