// tcstargz runs stargz-snapshotter (Debian's Go sources of it) as a
// containerd proxy snapshotter on a unix socket, for the lazy-pull test:
// the same service as upstream's containerd-stargz-grpc, with its
// configuration as flags instead of a TOML file and the registry's
// credentials from TC_REGISTRY_USER and TC_REGISTRY_PASSWORD.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/stargz-snapshotter/service"
	"google.golang.org/grpc"
)

func main() {
	address := flag.String("address", "", "unix socket to serve the snapshotter on")
	root := flag.String("root", "", "the snapshotter's state directory")
	noBackground := flag.Bool("no-background-fetch", true,
		"fetch only what is read and what the prefetch names (so that bytes fetched measure the prefetch)")
	flag.Parse()
	if *address == "" || *root == "" {
		log.Fatal("usage: tcstargz -address SOCKET -root DIR")
	}
	ctx := context.Background()
	var config service.Config
	config.Config.NoBackgroundFetch = *noBackground
	// The test registry's credentials, from the environment.
	creds := func(string, reference.Spec) (string, string, error) {
		return os.Getenv("TC_REGISTRY_USER"), os.Getenv("TC_REGISTRY_PASSWORD"), nil
	}
	sn, err := service.NewStargzSnapshotterService(ctx, *root, &config, service.WithCredsFuncs(creds))
	if err != nil {
		log.Fatalf("stargz snapshotter: %v", err)
	}
	rpc := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(sn))
	os.Remove(*address)
	listener, err := net.Listen("unix", *address)
	if err != nil {
		log.Fatalf("listen on %s: %v", *address, err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		if err := rpc.Serve(listener); err != nil {
			log.Fatalf("serve: %v", err)
		}
	}()
	log.Printf("stargz snapshotter ready on %s", *address)
	<-stop
	rpc.Stop()
	if err := sn.Close(); err != nil {
		log.Printf("close: %v", err)
	}
}
