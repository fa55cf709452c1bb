// cnitool runs a network configuration list through libcni, as the upstream cnitool does (Debian
// packages libcni but no cnitool):
//
//	cnitool add|check|del NETWORK NETNS
//
// The list named NETWORK is loaded from NETCONFPATH (default /etc/cni/net.d); plugins are found on
// CNI_PATH. CNI_IFNAME (default eth0), CNI_ARGS ("K=V;K2=V2") and CAP_ARGS (the capability
// arguments as one JSON object) are passed to libcni. As upstream, the container id is derived
// from the namespace path unless CNI_CONTAINERID gives one; CNI_CACHE_DIR moves libcni's result
// cache (default /var/lib/cni). add prints the result.
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

func env(name, dflt string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return dflt
}

func parseArgs(s string) ([][2]string, error) {
	var out [][2]string
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("invalid CNI_ARGS pair %q", kv)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cnitool:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 4 {
		return fmt.Errorf("usage: cnitool add|check|del NETWORK NETNS")
	}
	netconf, err := libcni.LoadConfList(env("NETCONFPATH", "/etc/cni/net.d"), os.Args[2])
	if err != nil {
		return err
	}
	var capabilityArgs map[string]interface{}
	if v := os.Getenv("CAP_ARGS"); v != "" {
		if err := json.Unmarshal([]byte(v), &capabilityArgs); err != nil {
			return fmt.Errorf("CAP_ARGS: %w", err)
		}
	}
	cniArgs, err := parseArgs(os.Getenv("CNI_ARGS"))
	if err != nil {
		return err
	}
	netns, err := filepath.Abs(os.Args[3])
	if err != nil {
		return err
	}
	s := sha512.Sum512([]byte(netns))
	rt := &libcni.RuntimeConf{
		ContainerID:    env("CNI_CONTAINERID", fmt.Sprintf("cnitool-%x", s[:10])),
		NetNS:          netns,
		IfName:         env("CNI_IFNAME", "eth0"),
		Args:           cniArgs,
		CapabilityArgs: capabilityArgs,
	}
	cninet := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), os.Getenv("CNI_CACHE_DIR"), nil)
	ctx := context.Background()
	switch os.Args[1] {
	case "add":
		result, err := cninet.AddNetworkList(ctx, netconf, rt)
		if result != nil {
			if perr := result.Print(); perr != nil && err == nil {
				err = perr
			}
		}
		return err
	case "check":
		return cninet.CheckNetworkList(ctx, netconf, rt)
	case "del":
		return cninet.DelNetworkList(ctx, netconf, rt)
	default:
		return fmt.Errorf("unknown command %q (add, check, del)", os.Args[1])
	}
}
