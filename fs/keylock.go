package fs

import "sync"

// keyLocks locks file keys one by one: the holder of a key's lock may do
// storage I/O for that key without holding up any other key. The map only
// holds keys in use; each entry counts the goroutines holding or waiting
// for it, and the last one out removes it. The map's own mutex is never
// held across I/O.
type keyLocks struct {
	mu sync.Mutex
	// m holds the locks of the keys in use. Guarded by mu.
	m map[fileKey]*keyLock
}

type keyLock struct {
	mu sync.Mutex
	// refs counts the holder and the waiters. Guarded by keyLocks.mu.
	refs int
}

// lock locks k and returns the function that unlocks it.
func (l *keyLocks) lock(k fileKey) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[fileKey]*keyLock{}
	}
	kl := l.m[k]
	if kl == nil {
		kl = &keyLock{}
		l.m[k] = kl
	}
	kl.refs++
	l.mu.Unlock()
	kl.mu.Lock()
	return func() {
		kl.mu.Unlock()
		l.mu.Lock()
		kl.refs--
		if kl.refs == 0 {
			delete(l.m, k)
		}
		l.mu.Unlock()
	}
}

// held returns how many keys are locked or waited for, for tests.
func (l *keyLocks) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
