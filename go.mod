module github.com/regfs/regfs

go 1.26.8

require github.com/opencontainers/go-digest v1.0.0

require (
	bazil.org/fuse v0.0.0-20230120002735-62a210ff1fd5 // indirect
	github.com/distribution/reference v0.6.0 // indirect
	github.com/docker/libtrust v0.0.0-20160708172513-aabc10ec26b7 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/hashicorp/golang-lru/v2 v2.0.7
	github.com/opencontainers/image-spec v1.1.1 // indirect
	golang.org/x/sys v0.4.0 // indirect
)
