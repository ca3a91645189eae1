package filesystem

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkPutContent1000 measures the case of many small uploads: 1,000
// PutContent calls of a 71-byte link, once replacing links in directories
// that exist and once creating each link's directories (a new tag), where
// the write has to make the directory chain appear with its content.
func BenchmarkPutContent1000(b *testing.B) {
	link := []byte("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		path func(round, i int) string
	}{
		{"existing-dirs", func(_, i int) string { return fmt.Sprintf("/repo/_layers/sha256/%d/link", i%10) }},
		{"new-dirs", func(round, i int) string { return fmt.Sprintf("/repo/_manifests/tags/t%d-%d/current/link", round, i) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			d := newDriver(b, b.TempDir())
			for i := range 10 {
				if err := d.PutContent(ctx, tc.path(-1, i), link); err != nil {
					b.Fatal(err)
				}
			}
			round := 0
			for b.Loop() {
				for i := range 1000 {
					if err := d.PutContent(ctx, tc.path(round, i), link); err != nil {
						b.Fatal(err)
					}
				}
				round++
			}
		})
	}
}
