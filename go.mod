module github.com/wren-vm/wren

go 1.26.8

require github.com/ulikunitz/xz v0.5.15

require (
	github.com/containerd/ttrpc v1.2.10 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

tool (
	github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc
	google.golang.org/protobuf/cmd/protoc-gen-go
)
