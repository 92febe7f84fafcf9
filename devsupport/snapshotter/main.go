// A small stargz snapshotter daemon: the lazy-pulling half of the test node
// (devsupport/coldnode.py).
//
// Why it exists: Debian ships the stargz snapshotter's Go library
// (golang-github-containerd-stargz-snapshotter-dev) and its client, ctr-remote, but no
// daemon, and upstream's daemon (cmd/containerd-stargz-grpc) cannot be built from Debian's
// sources: its service package needs k8s.io/cri-api, which Debian lacks. This program puts
// together the same parts that service does, the FUSE filesystem (fs.NewFilesystem, with
// the in-memory metadata store and source.FromDefaultLabels) and the snapshotter on top of
// it (snapshot.NewSnapshotter), and serves them with containerd's snapshotservice over gRPC
// on a unix socket, as upstream's daemon does. A containerd reaches it through a
// `proxy_plugins` entry of type "snapshot".
//
// How it is built: by devsupport/snapshotter (`python -m devsupport.snapshotter`), once
// per version of this file, of Go and of Debian's library packages, in GOPATH mode from
// Debian's packages alone (scripts/machine-setup.sh installs them):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o BINARY main.go
//
// Flags:
//
//	-root DIR            its state: snapshots (DIR/snapshotter) and fetched data (DIR/stargz)
//	-address PATH        the unix socket it serves on
//	-docker-config FILE  registry credentials: a docker config.json, whose "auths" map a
//	                     registry host to {"auth": base64("user:password")}, as
//	                     `docker login` writes it; read once at start
//	-log FILE            where it logs (appended); credentials are never logged
//
// It stops on SIGINT or SIGTERM, unmounting every layer it mounted.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	golog "log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/snapshots/overlay/overlayutils"
	"github.com/containerd/stargz-snapshotter/fs"
	"github.com/containerd/stargz-snapshotter/fs/config"
	"github.com/containerd/stargz-snapshotter/fs/layer"
	"github.com/containerd/stargz-snapshotter/fs/source"
	memorymetadata "github.com/containerd/stargz-snapshotter/metadata/memory"
	"github.com/containerd/stargz-snapshotter/snapshot"
	rhttp "github.com/hashicorp/go-retryablehttp"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
)

var (
	rootDir      = flag.String("root", "", "the snapshotter's state directory")
	address      = flag.String("address", "", "the unix socket to serve on")
	dockerConfig = flag.String("docker-config", "", "a docker config.json with registry credentials")
	logFile      = flag.String("log", "", "the file to log to")
)

// fsConfig is the filesystem's configuration: the library's defaults but one.
var fsConfig = config.Config{
	// Fetch only what the prefetch asks for and what containers read, never the rest of
	// each layer in the background as upstream's default does: what a node fetched is
	// then what lazy pulling needed, which is what the tests and benchmarks measure.
	NoBackgroundFetch: true,
	// Left at their defaults, and relied on:
	// - NoPrefetch false: prefetch is on. When a layer is mounted, a layer whose eStargz
	//   TOC has the prefetch landmark (.prefetch.landmark, written after the prioritized
	//   files) has everything before it fetched at once, and the first container start
	//   waits for it (up to PrefetchTimeoutSec, 10 s); a layer with the no-prefetch
	//   landmark has nothing prefetched; any other layer has its first PrefetchSize
	//   bytes, or the size in the layer's "containerd.io/snapshot/remote/stargz.prefetch"
	//   label, prefetched.
	// - NoPrometheus false: the layer metrics are kept, and logged at info level (see
	//   fs.WithMetricsLogLevel below), so the log says how much each prefetch fetched.
	// - caches on disk, under -root's stargz/.
}

func main() {
	flag.Parse()
	if *rootDir == "" || *address == "" || *dockerConfig == "" || *logFile == "" {
		golog.Fatal("usage: -root DIR -address SOCKET -docker-config FILE -log FILE")
	}
	out, err := os.OpenFile(*logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		golog.Fatalf("cannot open the log: %v", err)
	}
	logrus.SetOutput(out)
	logrus.SetLevel(logrus.InfoLevel)
	ctx := log.WithLogger(context.Background(), log.L)
	// go-fuse logs through the standard library's logger: into this log, as debug.
	golog.SetOutput(log.G(ctx).WriterLevel(logrus.DebugLevel))

	credentials, err := readCredentials(*dockerConfig)
	if err != nil {
		log.G(ctx).WithError(err).Fatal("cannot read the registry credentials")
	}
	snapshotterRoot := filepath.Join(*rootDir, "snapshotter")
	// The snapshotter is the overlay snapshotter with remote layers under it.
	if err := overlayutils.Supported(snapshotterRoot); err != nil {
		log.G(ctx).WithError(err).Fatal("overlayfs cannot be used under -root")
	}
	opaque := layer.OverlayOpaqueTrusted
	if user, err := overlayutils.NeedsUserXAttr(snapshotterRoot); err == nil && user {
		opaque = layer.OverlayOpaqueUser // a kernel that wants user.* xattrs (rootless)
	}
	filesystem, err := fs.NewFilesystem(filepath.Join(*rootDir, "stargz"), fsConfig,
		fs.WithGetSources(source.FromDefaultLabels(registryHosts(credentials))),
		fs.WithMetadataStore(memorymetadata.NewReader),
		fs.WithMetricsLogLevel(logrus.InfoLevel),
		fs.WithOverlayOpaqueType(opaque),
	)
	if err != nil {
		log.G(ctx).WithError(err).Fatal("cannot make the filesystem")
	}
	snapshotter, err := snapshot.NewSnapshotter(ctx, snapshotterRoot, filesystem,
		snapshot.AsynchronousRemove)
	if err != nil {
		log.G(ctx).WithError(err).Fatal("cannot make the snapshotter")
	}

	rpc := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(snapshotter))
	if err := os.MkdirAll(filepath.Dir(*address), 0o700); err != nil {
		log.G(ctx).WithError(err).Fatal("cannot make the socket's directory")
	}
	if err := os.RemoveAll(*address); err != nil {
		log.G(ctx).WithError(err).Fatal("cannot remove an old socket")
	}
	listener, err := net.Listen("unix", *address)
	if err != nil {
		log.G(ctx).WithError(err).Fatal("cannot listen")
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, unix.SIGINT, unix.SIGTERM)
	served := make(chan error, 1)
	go func() { served <- rpc.Serve(listener) }()
	log.G(ctx).WithField("address", *address).Info("serving")

	select {
	case s := <-signals:
		log.G(ctx).Infof("stopping on %v", s)
	case err := <-served:
		log.G(ctx).WithError(err).Error("the gRPC server stopped")
	}
	rpc.Stop()
	// Unmounts every layer and removes every snapshot: a node stopped is gone.
	if err := snapshotter.Close(); err != nil {
		log.G(ctx).WithError(err).Error("closing the snapshotter")
	}
	log.G(ctx).Info("stopped")
}

// credential is one registry's user and password.
type credential struct{ user, password string }

// readCredentials reads the "auths" of a docker config.json: registry host -> credential.
func readCredentials(path string) (map[string]credential, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var file struct {
		Auths map[string]struct {
			Auth string `json:"auth"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		return nil, err
	}
	found := map[string]credential{}
	for host, entry := range file.Auths {
		decoded, err := base64.StdEncoding.DecodeString(entry.Auth)
		if err != nil {
			return nil, err
		}
		user, password, _ := strings.Cut(string(decoded), ":")
		found[host] = credential{user, password}
	}
	return found, nil
}

// registryHosts says how to reach the registry an image reference names: HTTPS, or plain
// HTTP for a loopback address, with basic auth from `credentials` when it asks.
func registryHosts(credentials map[string]credential) source.RegistryHosts {
	// The library fetches through the host's HTTP client's transport, so one is needed.
	// go-retryablehttp's, as upstream's: the library sets its retries from the config.
	// No time limit of its own: the library's fetch timeout (300 s) bounds each fetch,
	// and a shorter one would cut a large prefetch over a throttled link.
	retrying := rhttp.NewClient()
	retrying.Logger = nil // not a line per request
	client := retrying.StandardClient()
	authorizer := docker.NewDockerAuthorizer(
		docker.WithAuthClient(client),
		docker.WithAuthCreds(func(host string) (string, string, error) {
			c := credentials[host]
			return c.user, c.password, nil
		}),
	)
	configure := docker.ConfigureDefaultRegistries(
		docker.WithClient(client),
		docker.WithAuthorizer(authorizer),
		docker.WithPlainHTTP(isLoopback),
	)
	return func(ref reference.Spec) ([]docker.RegistryHost, error) {
		return configure(ref.Hostname())
	}
}

// isLoopback is true for localhost and any address in 127.0.0.0/8 or ::1, with or
// without a port.
func isLoopback(host string) (bool, error) {
	if name, _, err := net.SplitHostPort(host); err == nil {
		host = name
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback(), nil
}
