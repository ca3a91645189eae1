package filesystem

import (
	"os"
	"strconv"
	"strings"
)

// Staging and trash entries are named "<owner>.<n>", the owner being one
// driver in one process: "<pid>-<start>-<random>", start being the
// process's start time in clock ticks since boot (/proc/<pid>/stat), which
// tells the process from a later one given the same pid.
//
// A writer creates its staging entry and then locks it; between the two a
// janitor of another process could take the unlocked entry for a crash's
// leftover (fsck beside a live mount reported it so). So an entry whose
// owner process is alive on this machine is never a leftover: it is in
// use, or about to be locked. An owner that cannot be told (another pid
// namespace, another machine, an older name) falls back to the lock alone.

// ownerID returns a new owner name for a driver of this process.
func ownerID(random string) string {
	pid := os.Getpid()
	return strconv.Itoa(pid) + "-" + procStart(pid) + "-" + random
}

// procStart returns the start time of process pid in clock ticks since
// boot, or "" if it cannot be read.
func procStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command name, in parentheses, may hold spaces: the fields
	// counted are those after its closing parenthesis, from field 3.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(b[i+1:]))
	const startField = 22 - 3
	if len(f) <= startField {
		return ""
	}
	return f[startField]
}

// ownerAlive tells whether the entry name belongs to a process that is
// running on this machine now.
func ownerAlive(name string) bool {
	owner, _, ok := strings.Cut(name, ".")
	if !ok {
		return false
	}
	p := strings.SplitN(owner, "-", 3)
	if len(p) != 3 || p[1] == "" {
		return false
	}
	pid, err := strconv.Atoi(p[0])
	if err != nil || pid <= 0 {
		return false
	}
	return procStart(pid) == p[1]
}
